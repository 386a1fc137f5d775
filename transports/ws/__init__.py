"""The WebSocket endpoint ``/ws``: push consumers, acks and pipelined publishes on one connection.

`endpoint` holds the Litestar route and the handshake; `session` the state
and loops of one connection; `codec` the JSON and MessagePack frame formats.
The frames themselves are `transports.wire`.
"""

from __future__ import annotations

from .endpoint import Registry, registry_of, ws_endpoint
from .session import CLOSE_EXPIRED, CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TOO_BIG, Session

__all__ = [
    "CLOSE_EXPIRED",
    "CLOSE_INTERNAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "ROUTES",
    "Registry",
    "Session",
    "registry_of",
]

ROUTES = [ws_endpoint]
"""The WebSocket route handlers, for `transports.app.create_app`."""

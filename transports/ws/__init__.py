"""The WebSocket endpoint ``/ws``: push consumers, acks and pipelined publishes on one connection.

`endpoint` holds the Litestar route and the handshake; `session` the I/O
shell of one connection (its read and write loops, send buffer, close and
timers); `protocol` what a connection answers, without I/O; `consumers` its
subscriptions and delivery tags, without I/O; `codec` the JSON and
MessagePack frame formats. The frames themselves are `broker_core.frames`.
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

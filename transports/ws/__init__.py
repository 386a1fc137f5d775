"""The WebSocket endpoint ``/ws``: push consumers, acks and pipelined publishes on one connection.

`endpoint` holds the Litestar route and the handshake; `connection` the
I/O shell of one connection (its read and write loops, send buffer and
close); `session` what its frames do with the broker, and its rights;
`direct` the short data path through uvicorn; `protocol` what a connection
answers and `consumers` its subscriptions and delivery tags, both without
I/O; `codec` the JSON and MessagePack frame formats. The frames themselves are `transports.wire`.
"""

from __future__ import annotations

from .connection import CLOSE_EXPIRED, CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TOO_BIG
from .endpoint import Registry, registry_of, ws_endpoint
from .session import Session

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

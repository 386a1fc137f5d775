"""Everything a client touches: REST, WebSocket, GraphQL, security, observability, CLI.

`create_app` is the composition root; `BrokerContext` holds the running broker.
They are imported on first use: the ``broker`` client commands and the
client library don't pay for loading the server (Litestar, Strawberry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import VERSION, create_app
    from .context import BrokerContext

__all__ = ["VERSION", "BrokerContext", "create_app"]


def __getattr__(name: str) -> Any:
    if name in ("VERSION", "create_app"):
        from . import app

        return getattr(app, name)
    if name == "BrokerContext":
        from .context import BrokerContext

        return BrokerContext
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

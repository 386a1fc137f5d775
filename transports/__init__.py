"""Everything a client touches: REST, WebSocket, GraphQL, security, observability, CLI.

`create_app` is the composition root; `BrokerContext` holds the running broker.
"""

from __future__ import annotations

from .app import VERSION, create_app
from .context import BrokerContext

__all__ = ["VERSION", "BrokerContext", "create_app"]

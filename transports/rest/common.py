"""What the REST controllers share: the context, the caller and its address."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar import Request
    from litestar.connection import ASGIConnection

    from broker_core.auth import User

    from ..context import BrokerContext

__all__ = ["client_ip", "ctx_of", "user_of"]


def ctx_of(request: Request[Any, Any, Any] | ASGIConnection[Any, Any, Any, Any]) -> BrokerContext:
    """The broker context of the app serving ``request``."""
    ctx: BrokerContext = request.app.state.ctx
    return ctx


def user_of(request: Request[Any, Any, Any]) -> User:
    """The authenticated caller (set by the bearer middleware)."""
    user: User = request.user
    return user


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer address of ``connection`` (no proxy headers are trusted)."""
    client = connection.client
    return client.host if client is not None else "unknown"

"""What the REST controllers share: the context, the caller and rate-limit guards."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from litestar.exceptions import TooManyRequestsException

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from litestar import Request
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler

    from broker_core.auth import User

    from ..context import BrokerContext
    from ..ratelimit import TokenBucketLimiter

__all__ = ["client_ip", "ctx_of", "rate_limit", "user_of"]


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


def rate_limit(
    pick: Callable[[BrokerContext], TokenBucketLimiter],
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    """A guard that spends one token of the caller's bucket, or answers 429 with Retry-After.

    The key is the user when authenticated, else the client IP.
    """

    # Async: Litestar would run a sync guard in a worker thread.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        limiter = pick(ctx_of(connection))
        if not limiter.enabled:
            return
        user = connection.scope.get("user")
        key = f"u:{user.username}" if user is not None else f"ip:{client_ip(connection)}"
        wait = limiter.hit(key, time.monotonic())
        if wait > 0:
            raise TooManyRequestsException(
                "rate limit exceeded", headers={"Retry-After": str(max(1, round(wait + 0.5)))}
            )

    return guard

"""Authentication of HTTP requests, and the security headers of every response.

`BearerAuthMiddleware` verifies ``Authorization: Bearer <access token>`` on
every HTTP route but the open ones (``/health``, the token endpoints and the
dashboard's static files, the API docs), puts the `User` on ``request.user`` and spends a
token of the user's rate-limit bucket of the route's class (the route's
``opt["rate_limit"]``: ``publish``, ``consume``, ``admin``, else ``default``).
WebSocket routes authenticate themselves (header or first frame). What an
authenticated user may do is `broker_core.permissions`.
"""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any

from litestar.exceptions import NotAuthorizedException, TooManyRequestsException

from broker_core.history import acting

if TYPE_CHECKING:
    from litestar import Request
    from litestar.connection import ASGIConnection
    from litestar.types import ASGIApp

    from broker_core.auth import User

    from .context import BrokerContext
    from .ratelimit import TokenBucketLimiter

__all__ = [
    "OPEN_PATHS",
    "BearerAuthMiddleware",
    "bearer_token",
    "client_ip",
    "security_headers",
    "user_of",
]

OPEN_PATHS = [
    "^/health$",
    "^/auth/token$",
    "^/login$",
    "^/auth/refresh$",
    "^/dashboard",
    "^/schema(/|$)",  # the API docs and their document (`transports.openapi`)
]
"""Routes reachable without a token (regular expressions over the path)."""
_OPEN = re.compile("|".join(OPEN_PATHS))


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or ``None``."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class BearerAuthMiddleware:
    """Puts the token's `User` on ``request.user``; answers 401 without a valid token.

    A raw ASGI middleware (it runs per route, after routing): it reads the
    header straight from the scope instead of building a connection object,
    since it runs on every request of the publish path. Routes with
    ``opt["exclude_from_auth"]`` and `OPEN_PATHS` pass without a token.
    """

    def __init__(self, app: ASGIApp, ctx: BrokerContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            opt = scope["route_handler"].opt
            if not opt.get("exclude_from_auth") and _OPEN.match(scope["path"]) is None:
                user, auth = self._authenticate(scope, opt)
                scope["user"], scope["auth"] = user, auth
                # Histories say who published, retried or cancelled, over what.
                acting(_transport(scope["path"]), user.username)
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Any, opt: dict[str, Any]) -> tuple[User, str]:
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        token = bearer_token(header)
        if token is None:
            raise NotAuthorizedException("missing bearer token")
        # An InvalidToken reaches the client as 401 with its code (``token_revoked``
        # tells a client that refreshing won't help: its user changed).
        user = self.ctx.accounts.authenticate(token)
        # Rate limits live here, not in route guards: Litestar copies the
        # route handler for every guard call, a real cost on the publish path.
        limiter: TokenBucketLimiter = getattr(self.ctx.limits, opt.get("rate_limit", "default"))
        if limiter.enabled:
            wait = limiter.hit(user.username, time.monotonic())
            if wait > 0:
                raise TooManyRequestsException(
                    "rate limit exceeded", headers={"Retry-After": str(max(1, math.ceil(wait)))}
                )
        return user, token


def _transport(path: str) -> str:
    return "graphql" if path.startswith("/graphql") else "rest"


def user_of(request: Request[Any, Any, Any]) -> User:
    """The authenticated caller of a route (put there by `BearerAuthMiddleware`)."""
    user: User = request.user
    return user


def client_ip(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer address of ``connection`` (no proxy headers are trusted)."""
    client = connection.client
    return client.host if client is not None else "unknown"


def security_headers(hsts: bool) -> list[tuple[bytes, bytes]]:
    """The headers every HTTP response carries (HSTS only when serving TLS)."""
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if hsts:
        headers.append((b"strict-transport-security", b"max-age=31536000"))
    return headers

"""`GraphQLContext`: who is calling, over which connection, and what they may spend.

One context is built per HTTP request and one per WebSocket connection
(`http_context` and `ws_context`, Litestar dependencies of the view).

* Over HTTP the bearer middleware has already verified the token and put the
  `User` in the scope. The one route it skips is ``GET /graphql`` in
  development mode, so that a browser can load GraphiQL; there the
  ``Authorization`` header, if any, is verified here (as it is on a
  WebSocket upgrade request, which ``connection_init`` may then do without).
* Over WebSocket (graphql-transport-ws and legacy graphql-ws alike) the client
  authenticates in ``connection_init`` with ``{"token": ...}`` or
  ``{"Authorization": "Bearer ..."}``; `authenticate_connection` is the view's
  ``on_ws_connect`` hook and refuses the connection otherwise (close 4403 in
  graphql-transport-ws, ``connection_error`` in graphql-ws).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

# Litestar reads the annotations of `http_context` and `ws_context` at runtime
# to inject their dependencies.
from litestar import Request, Response, WebSocket  # noqa: TC002
from litestar.datastructures import State  # noqa: TC002
from litestar.di import NamedDependency  # noqa: TC002
from strawberry.exceptions import ConnectionRejectionError
from strawberry.litestar.controller import BaseContext

from broker_core.auth import InvalidToken, TokenType, User

from ..errors import ApiError
from ..security import bearer_token

if TYPE_CHECKING:
    from collections.abc import Iterator

    import strawberry
    from litestar.connection import ASGIConnection

    from ..context import BrokerContext
    from ..ratelimit import TokenBucketLimiter

_RECHECK_S = 1.0
"""How often a WebSocket's token is checked for revocation (expiry is timed exactly)."""

__all__ = ["GraphQLContext", "authenticate_connection", "context_of", "http_context", "ws_context"]


class GraphQLContext(BaseContext, kw_only=True):
    """The context of one GraphQL request or WebSocket connection."""

    broker_ctx: Any
    """The running `BrokerContext`."""
    user: User | None = None
    """The authenticated caller; ``None`` until a WebSocket's ``connection_init``."""
    auth_error: str | None = None
    """Why the caller is not authenticated, for the error message."""
    connection_params: dict[str, object] | None = None
    """The ``connection_init`` payload (set by Strawberry's protocol handlers)."""
    subscriptions: int = 0
    """Subscriptions open on this connection."""
    watcher: Any = None
    """The task that ends the WebSocket when its token expires or is revoked."""

    @property
    def ctx(self) -> BrokerContext:
        """The broker's services."""
        ctx: BrokerContext = self.broker_ctx
        return ctx

    def caller(self) -> User:
        """The authenticated user; raise a 401 `ApiError` if there is none."""
        if self.user is None:
            raise ApiError(401, "unauthorized", self.auth_error or "missing bearer token")
        return self.user

    def spend(self, limiter: TokenBucketLimiter, cost: float = 1.0) -> None:
        """Spend from the caller's bucket (shared with REST); raise a 429 `ApiError` when empty."""
        user = self.caller()
        if not limiter.enabled:
            return
        wait = limiter.hit(user.username, time.monotonic(), cost)
        if wait > 0:
            raise ApiError(
                429, "rate_limited", f"rate limit exceeded: retry in {max(1, round(wait + 0.5))} s"
            )

    @contextmanager
    def subscription_slot(self) -> Iterator[None]:
        """Hold one of the connection's ``max_consumers_per_connection`` subscription slots.

        Strawberry caps operations per connection too; this cap is ours so it
        holds whatever the Strawberry version (see the advisory in STYLE.md).
        """
        limit = self.ctx.settings.max_consumers_per_connection
        if self.subscriptions >= limit:
            raise ApiError(
                429, "too_many_subscriptions", f"a connection holds at most {limit} subscriptions"
            )
        self.subscriptions += 1
        try:
            yield
        finally:
            self.subscriptions -= 1


def context_of(info: strawberry.Info[Any, Any]) -> GraphQLContext:
    """The `GraphQLContext` of a resolver's ``info``."""
    context: GraphQLContext = info.context
    return context


def _authenticated(context: GraphQLContext, connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    user = connection.scope.get("user")
    if isinstance(user, User):  # the bearer middleware verified it
        context.user = user
        return
    token = bearer_token(connection.headers.get("authorization"))
    if token is not None:
        try:
            context.user = context.ctx.accounts.authenticate(token)
        except InvalidToken as exc:
            context.auth_error = exc.reason


async def http_context(
    state: State, request: Request[Any, Any, Any], response: NamedDependency[Response[Any]]
) -> GraphQLContext:
    """The context of an HTTP request (a Litestar dependency)."""
    context = GraphQLContext(broker_ctx=state.ctx, request=request, response=response)
    _authenticated(context, request)
    return context


async def ws_context(state: State, socket: WebSocket[Any, Any, Any]) -> GraphQLContext:
    """The context of a WebSocket connection (a Litestar dependency)."""
    context = GraphQLContext(broker_ctx=state.ctx, websocket=socket)
    _authenticated(context, socket)
    return context


async def authenticate_connection(context: GraphQLContext) -> None:
    """Authenticate a WebSocket from its ``connection_init`` payload.

    Raises:
        ConnectionRejectionError: no valid token: Strawberry refuses the connection.
    """
    params = context.connection_params or {}
    token = params.get("token")
    if token is None:
        header = params.get("Authorization", params.get("authorization"))
        token = bearer_token(header) if isinstance(header, str) else None
    if token is None:
        if context.user is not None:
            return  # authenticated by the upgrade request's Authorization header
        raise ConnectionRejectionError(
            {"message": "connection_init needs a token", "code": "unauthorized"}
        )
    if not isinstance(token, str):
        raise ConnectionRejectionError(
            {"message": "token must be a string", "code": "unauthorized"}
        )
    try:
        context.user = context.ctx.accounts.authenticate(token)
    except InvalidToken as exc:
        context.user = None
        raise ConnectionRejectionError({"message": exc.reason, "code": "unauthorized"}) from None
    if context.websocket is not None:
        context.watcher = asyncio.get_running_loop().create_task(_watch_token(context, token))


def _open(socket: WebSocket[Any, Any, Any]) -> bool:
    return socket.connection_state != "disconnect"


async def _watch_token(context: GraphQLContext, token: str) -> None:
    """Close the connection (4403) once its token expires or is revoked.

    Subscriptions outlive the request that authenticated them: without this
    a stolen-then-revoked or expired token would keep a consumer running.
    """
    socket = context.websocket
    assert socket is not None, "only WebSocket connections are watched"
    expires = context.ctx.accounts.tokens.verify(token, TokenType.ACCESS).exp
    while _open(socket):
        await asyncio.sleep(max(0.05, min(_RECHECK_S, expires - time.time())))
        if not _open(socket):
            return
        try:
            context.ctx.accounts.authenticate(token)
        except InvalidToken as exc:
            with suppress(Exception):
                await socket.close(code=4403, reason=exc.reason[:120])
            return

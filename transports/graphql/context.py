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

A WebSocket's rights are checked continuously (DESIGN.md, "Trust"): its
`RightsWatch` follows the user (`Accounts.follow`). Each subscription holds
a `Held` naming the right it needs; when the user loses it, the subscription
ends with an error ``revoked`` and completes (what it held is requeued).
When the user is deleted or disabled or its password changes, every
subscription ends so, then the connection is closed (4403), as it is when
the token expires. Every operation re-reads the user (`GraphQLContext.caller`).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import msgspec

# Litestar reads the annotations of `http_context` and `ws_context` at runtime
# to inject their dependencies.
from litestar import Request, Response, WebSocket  # noqa: TC002
from litestar.datastructures import State  # noqa: TC002
from litestar.di import NamedDependency  # noqa: TC002
from strawberry.exceptions import ConnectionRejectionError
from strawberry.litestar.controller import BaseContext

from broker_core.auth import InvalidToken, User, revocation_reason
from broker_core.history import acting

from ..errors import ApiError
from ..operations import check_subscriptions
from ..security import bearer_token

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import strawberry
    from litestar.connection import ASGIConnection

    from broker_core.auth import Claims

    from ..context import BrokerContext
    from ..ratelimit import TokenBucketLimiter

CLOSE_FORBIDDEN = 4403
"""graphql-transport-ws's close code for a refused or no longer valid token."""
_CLOSE_GRACE_S = 1.0
"""How long revoked subscriptions may take to send their error before the socket closes."""

__all__ = [
    "CLOSE_FORBIDDEN",
    "GraphQLContext",
    "Held",
    "RightsWatch",
    "authenticate_connection",
    "context_of",
    "http_context",
    "ws_context",
]


class Held:
    """What a live subscription holds: the right it needs and how to end it when that is lost.

    Args:
        right: the right, for the error message (``consume on queue 'jobs'``).
        may_hold: called with the user as it is after a change; ``False`` ends
            the subscription.
        revoke: ends the subscription with the error given (synchronously: it
            only wakes the subscription, which then raises the error).
    """

    __slots__ = ("may_hold", "revoke", "right", "task")

    def __init__(
        self, right: str, may_hold: Callable[[User], bool], revoke: Callable[[ApiError], None]
    ) -> None:
        self.right = right
        self.may_hold = may_hold
        self.revoke = revoke
        self.task: asyncio.Task[Any] | None = None
        """The operation's task (it sends the error and the completion)."""


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
    held: set[Held] = msgspec.field(default_factory=set)
    """The rights the connection's subscriptions hold now."""
    claims: Any = None
    """A WebSocket's token claims, once authenticated: the user is re-checked against them."""
    watcher: Any = None
    """The `RightsWatch` of a WebSocket, which ends what its user may no longer hold."""

    @property
    def ctx(self) -> BrokerContext:
        """The broker's services."""
        ctx: BrokerContext = self.broker_ctx
        return ctx

    def caller(self) -> User:
        """The authenticated user as it is now; raise a 401 `ApiError` if there is none.

        Over WebSocket the user is read again for each operation, so that a
        permission removed since ``connection_init`` counts at once.
        """
        if self.user is None:
            raise ApiError(401, "unauthorized", self.auth_error or "missing bearer token")
        if self.claims is not None:
            try:
                self.user = self.ctx.accounts.current(self.claims)
            except InvalidToken as exc:
                self.user, self.auth_error = None, exc.reason
                raise ApiError(401, exc.code, exc.reason) from None
        # What this resolver publishes, retries or cancels is recorded as theirs.
        acting("graphql", self.user.username)
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
    def subscription_slot(self, held: Held | None = None) -> Iterator[None]:
        """Hold one of the connection's ``max_consumers_per_connection`` subscription slots.

        Strawberry caps operations per connection too; this cap is ours so it
        holds whatever the Strawberry version (see the advisory in STYLE.md).
        With ``held``, the subscription is ended (``held.revoke``) once its
        user may no longer hold it.
        """
        check_subscriptions(self.ctx.settings, self.subscriptions)
        self.subscriptions += 1
        if held is not None:
            held.task = asyncio.current_task()
            self.held.add(held)
        try:
            yield
        finally:
            self.subscriptions -= 1
            if held is not None:
                self.held.discard(held)

    def release(self) -> None:
        """Stop watching the user's rights (call once the WebSocket connection is over)."""
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None


class RightsWatch:
    """Keeps a GraphQL WebSocket within its user's rights, from ``connection_init`` on.

    Follows the user (`Accounts.follow`): a lost right ends the subscriptions
    that need it; a user gone, disabled or with a new password ends them all
    and closes the connection, as the token's expiry does.
    """

    def __init__(self, context: GraphQLContext, claims: Claims) -> None:
        self._context = context
        self._claims = claims
        self._username = claims.sub
        self._loop = asyncio.get_running_loop()
        self._expiry: asyncio.TimerHandle | None = None
        self._closer: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Follow the user and arm the token's expiry."""
        self._context.ctx.accounts.follow(self._username, self.user_changed)
        delay = max(0.0, self._claims.exp - time.time())
        self._expiry = self._loop.call_later(delay, self._expired)

    def stop(self) -> None:
        """Stop following (the connection is over)."""
        self._context.ctx.accounts.unfollow(self._username, self.user_changed)
        if self._expiry is not None:
            self._expiry.cancel()
        if self._closer is not None:
            self._closer.cancel()

    def user_changed(self, user: User | None) -> None:
        """End what ``user`` (as it is now) may no longer hold; never raises, never awaits."""
        context = self._context
        if self._closer is not None:
            return  # already revoked, or expired
        reason = revocation_reason(user, self._claims)
        if reason is not None:
            context.user, context.auth_error = None, f"token revoked: {reason}"
            held = list(context.held)
            for one in held:
                one.revoke(ApiError(401, "revoked", f"revoked: {reason}"))
            self._close_after(held, f"revoked: {reason}")
            return
        assert user is not None, "a user with a current token exists"
        context.user = user
        for one in list(context.held):
            if not one.may_hold(user):
                one.revoke(ApiError(403, "revoked", f"revoked: {one.right} is no longer allowed"))

    def _expired(self) -> None:
        self._expiry = None
        if self._closer is None:
            self._context.user, self._context.auth_error = None, "token has expired"
            self._close_after([], "token has expired")

    def _close_after(self, held: list[Held], reason: str) -> None:
        self._closer = self._loop.create_task(self._close(held, reason))

    async def _close(self, held: list[Held], reason: str) -> None:
        # The operations first send their ``revoked`` error and completion;
        # then the socket closes.
        tasks = {one.task for one in held if one.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_GRACE_S)
        socket = self._context.websocket
        if socket is not None and _open(socket):
            with suppress(Exception):
                await socket.close(code=CLOSE_FORBIDDEN, reason=reason[:120])


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
        _authenticate(context, token)


def _authenticate(context: GraphQLContext, token: str) -> None:
    """Authenticate ``context`` with an access token, or set ``auth_error``."""
    accounts = context.ctx.accounts
    try:
        if context.websocket is not None:
            context.user, context.claims = accounts.verify(token)
        else:
            context.user = accounts.authenticate(token)
    except InvalidToken as exc:
        context.user, context.auth_error = None, exc.reason


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
        if context.user is None:
            raise ConnectionRejectionError(
                {
                    "message": context.auth_error or "connection_init needs a token",
                    "code": "unauthorized",
                }
            )
        # else authenticated by the upgrade request's Authorization header
    elif not isinstance(token, str):
        raise ConnectionRejectionError(
            {"message": "token must be a string", "code": "unauthorized"}
        )
    else:
        _authenticate(context, token)
        if context.user is None:
            raise ConnectionRejectionError(
                {"message": context.auth_error or "invalid token", "code": "unauthorized"}
            )
    if context.websocket is not None and context.claims is not None and context.watcher is None:
        # Subscriptions outlive the request that authenticated them: without
        # this a revoked or expired token would keep a consumer running.
        context.watcher = RightsWatch(context, context.claims)
        context.watcher.start()


def _open(socket: WebSocket[Any, Any, Any]) -> bool:
    return socket.connection_state != "disconnect"

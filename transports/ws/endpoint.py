"""The ``/ws`` route: the handshake checks, authentication, then one `Session` per connection.

Before accepting, the endpoint refuses with an HTTP answer (the ASGI
WebSocket denial response; a bare 403 on servers without it):

* 403 ``origin_not_allowed``: a browser's ``Origin`` is not in
  ``allowed_origins`` or, when that list is empty, is not the same origin
  (its host and port differ from the ``Host`` header);
* 400 ``token_in_url``: a token in the query string (it would end up in
  access logs and browser history);
* 401 ``unauthorized``: an ``Authorization`` header that is not a valid
  bearer access token;
* 429 ``too_many_connections``: the user holds ``max_connections_per_user``.

Without an ``Authorization`` header the connection is accepted and its first
frame must be ``auth`` within ``ws_auth_timeout_s``, else it is closed with
1008 and a reason. The subprotocol ``msgpack`` switches to MessagePack binary
frames; JSON text frames are the default (also as subprotocol ``json``). The
query ``?batch=true`` asks for ``batch`` frames (`transports.wire`).
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
from litestar import WebSocket, websocket
from loguru import logger

from broker_core.auth import InvalidToken

from ..errors import InvalidInput, last_error
from ..security import bearer_token
from ..wire import Auth, Authenticated
from .codec import pick
from .connection import CLOSE_INTERNAL, CLOSE_POLICY
from .direct import EXTENSION
from .session import Session, authenticate

if TYPE_CHECKING:
    from broker_core.auth import Claims, User

    from ..context import BrokerContext
    from .codec import Codec
    from .direct import DirectSocket

__all__ = ["Registry", "origin_allowed", "registry_of", "token_in_url", "ws_endpoint"]

_TOKEN_PARAMS = frozenset(
    {"token", "access_token", "refresh_token", "jwt", "auth", "authorization", "bearer"}
)
_JWT_RE = re.compile(r"^eyJ[\w-]*\.[\w-]+\.[\w-]*$")
_error_encoder = msgspec.json.Encoder()


class Registry:
    """The live sessions of one broker and how many connections each user holds."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.sessions: set[Session] = set()
        self._users: dict[str, int] = {}

    def admit(self, username: str) -> bool:
        """Count one more connection of ``username``; ``False`` (not counted) if over the limit."""
        count = self._users.get(username, 0)
        if count >= self.per_user:
            return False
        self._users[username] = count + 1
        return True

    def leave(self, username: str) -> None:
        """Count one connection of ``username`` less."""
        count = self._users.get(username, 0) - 1
        if count > 0:
            self._users[username] = count
        else:
            self._users.pop(username, None)


_registries: weakref.WeakKeyDictionary[BrokerContext, Registry] = weakref.WeakKeyDictionary()


def registry_of(ctx: BrokerContext) -> Registry:
    """The WebSocket `Registry` of a broker (made on first use)."""
    registry = _registries.get(ctx)
    if registry is None:
        registry = _registries[ctx] = Registry(ctx.settings.max_connections_per_user)
    return registry


def origin_allowed(origin: str, host: str | None, scheme: str, allowed: tuple[str, ...]) -> bool:
    """Whether a browser page from ``origin`` may open a WebSocket here.

    With an ``allowed`` list, the origin must be in it (``*`` allows any).
    Without one, only the same origin may: its host and port must equal the
    ``Host`` header's (RFC 6454 origins; RFC 6455 section 10.2).
    """
    if allowed:
        wanted = origin.rstrip("/").lower()
        return any(entry == "*" or entry.rstrip("/").lower() == wanted for entry in allowed)
    if host is None:
        return False
    try:
        source = urlsplit(origin)
        target = urlsplit(f"//{host}")
        if source.scheme not in ("http", "https") or not source.hostname or not target.hostname:
            return False
        source_port = source.port or (443 if source.scheme == "https" else 80)
        target_port = target.port or (443 if scheme in ("wss", "https") else 80)
    except ValueError:
        return False
    return (source.hostname, source_port) == (target.hostname, target_port)


def wants_batches(query_string: bytes) -> bool:
    """Whether the client asked for ``batch`` frames (``?batch=true``)."""
    if not query_string:
        return False
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return any(name == "batch" and value.lower() in ("1", "true") for name, value in pairs)


def token_in_url(query_string: bytes) -> bool:
    """Whether the query string carries something that looks like a token."""
    if not query_string:
        return False
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return any(
        name.lower() in _TOKEN_PARAMS or _JWT_RE.match(value) is not None for name, value in pairs
    )


async def _deny(socket: WebSocket[Any, Any, Any], status: int, code: str, detail: str) -> None:
    """Refuse the handshake with an HTTP error answer (the REST error body)."""
    if "websocket.http.response" in (socket.scope.get("extensions") or {}):
        body = _error_encoder.encode({"status_code": status, "detail": detail, "code": code})
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        start: Any = {"type": "websocket.http.response.start", "status": status, "headers": headers}
        await socket.send(start)
        end: Any = {"type": "websocket.http.response.body", "body": body}
        await socket.send(end)
    else:  # the server answers 403
        await socket.send({"type": "websocket.close", "code": CLOSE_POLICY, "reason": detail})


async def _first_frame_auth(
    socket: WebSocket[Any, Any, Any], ctx: BrokerContext, codec: Codec
) -> tuple[User, Claims, Auth] | None:
    """Wait for the ``auth`` frame; close with 1008 and return ``None`` if it doesn't come."""
    timeout = ctx.settings.ws_auth_timeout_s
    try:
        message = await asyncio.wait_for(socket.receive(), timeout)
    except TimeoutError:
        await socket.close(CLOSE_POLICY, f"authentication timed out after {timeout:g} s")
        return None
    if message["type"] != "websocket.receive":
        return None
    data = message.get("text")
    try:
        frame = codec.decode(
            data if data is not None else message.get("bytes") or b"", ctx.settings.max_json_depth
        )
    except (msgspec.DecodeError, InvalidInput):
        frame = None
    if not isinstance(frame, Auth):
        await socket.close(CLOSE_POLICY, "authenticate first: send an auth frame")
        return None
    try:
        user, claims = authenticate(ctx, frame.token)
    except InvalidToken as exc:
        await socket.close(CLOSE_POLICY, f"authentication failed: {exc.reason}")
        return None
    return user, claims, frame


async def _serve(socket: WebSocket[Any, Any, Any], ctx: BrokerContext) -> None:
    scope = socket.scope
    if (await socket.receive())["type"] != "websocket.connect":
        return
    headers = socket.headers
    settings = ctx.settings
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(
        origin, headers.get("host"), scope["scheme"], settings.allowed_origins
    ):
        await _deny(socket, 403, "origin_not_allowed", f"origin {origin[:200]!r} is not allowed")
        return
    if token_in_url(scope.get("query_string", b"")):
        await _deny(
            socket,
            400,
            "token_in_url",
            "tokens in the URL are refused: use the Authorization header or an auth frame",
        )
        return
    subprotocol, codec = pick(list(scope.get("subprotocols") or ()))
    registry = registry_of(ctx)
    authenticated: tuple[User, Claims] | None = None
    header = headers.get("authorization")
    if header is not None:
        token = bearer_token(header)
        if token is None:
            await _deny(socket, 401, "unauthorized", "use Authorization: Bearer <access token>")
            return
        try:
            authenticated = authenticate(ctx, token)
        except InvalidToken as exc:
            await _deny(socket, 401, exc.code, exc.reason)
            return
        if not registry.admit(authenticated[0].username):
            await _deny(socket, 429, "too_many_connections", "too many connections for this user")
            return
    admitted: str | None = authenticated[0].username if authenticated is not None else None
    try:
        # Not socket.accept(): it only accepts before the connect event was received.
        await socket.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": []})
        if authenticated is None:
            first = await _first_frame_auth(socket, ctx, codec)
            if first is None:
                return
            user, claims, frame = first
            if not registry.admit(user.username):
                await socket.close(CLOSE_POLICY, "too many connections for this user")
                return
            admitted = user.username
            reply = Authenticated(
                username=user.username, expires_in=max(0.0, claims.exp - time.time()), ref=frame.ref
            )
            await socket.send(codec.send_event(codec.encode(reply)))
            authenticated = user, claims
        user, claims = authenticated
        batch = wants_batches(scope.get("query_string", b""))
        direct: DirectSocket | None = (scope.get("extensions") or {}).get(EXTENSION)  # type: ignore[assignment]
        session = Session(
            socket.send, socket.receive, ctx, codec, user, claims, batch=batch, direct=direct
        )
        registry.sessions.add(session)
        log = logger.bind(user=user.username, codec=codec.name)
        log.info("websocket connected")
        try:
            await session.run()
        finally:
            registry.sessions.discard(session)
            log.info("websocket closed")
    finally:
        if admitted is not None:
            registry.leave(admitted)


@websocket("/ws", exclude_from_auth=True, name="ws")
async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
    """The WebSocket endpoint: subscriptions, pushed deliveries, acks and pipelined publishes."""
    ctx: BrokerContext = socket.app.state.ctx
    try:
        await _serve(socket, ctx)
    except Exception as exc:
        if socket.connection_state == "disconnect":
            return
        logger.opt(exception=exc).error("websocket failed")
        last_error.record(f"{type(exc).__name__}: {exc}")
        if socket.connection_state != "init":
            try:
                await socket.close(CLOSE_INTERNAL, "internal error")
            except Exception as close_exc:
                logger.debug("websocket close failed", error=repr(close_exc))

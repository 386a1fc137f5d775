"""`BrokerConnection`: the client's one WebSocket to the broker, kept open.

The I/O shell of the client, like websockets' ``asyncio/connection.py``: it
opens the connection on first use (with a bearer token from `RestClient`),
reads frames into the `ClientProtocol`, and when the connection is lost
opens it again as `Reconnect` says (exponential backoff with jitter, a new
token when the old one expired), subscribing again and re-sending the
publishes not confirmed. A refresher task renews the access token before it
expires and hands it to the connection with an ``auth`` frame.
`transports.client.client.Client` adds publishing, subscribing and settling.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
from loguru import logger
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from ..wire import (
    Auth,
    ServerBatch,
    Subscribe,
    json_encoder,
    json_server_decoder,
    msgpack_encoder,
    msgpack_server_decoder,
)
from .errors import AuthError, ClientError, ClosedError, RequestError
from .protocol import ClientProtocol
from .reconnect import Reconnect, Step
from .rest import DEFAULT_URL, RestClient

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from ..wire import Ref, ServerFrame
    from .subscription import ClientSubscription

__all__ = ["BrokerConnection"]


class BrokerConnection(RestClient):
    """The REST client plus one WebSocket to the broker, opened on first use and kept open.

    Args:
        url: the broker's base URL; ``/ws`` is its WebSocket (``https`` -> ``wss``).
        msgpack: use MessagePack frames instead of JSON.
        reconnect: reconnect when the connection is lost (else fail everything).
        backoff: initial and longest delay between reconnection attempts, in seconds.
        connect_timeout: how long a publish or ack waits for a connection (``None``: for ever).
        compression: ``"deflate"`` to compress frames.
        batch: ask the broker for ``batch`` frames.
        **options: the `RestClient` arguments (credentials, ``insecure``, ``timeout``, ...).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        msgpack: bool = False,
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.1, 5.0),
        connect_timeout: float | None = 30.0,
        compression: str | None = None,
        batch: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        self.msgpack = msgpack
        self.reconnect = reconnect
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.compression = compression
        scheme, rest = self.url.split("://", 1) if "://" in self.url else ("http", self.url)
        self.batch = batch
        self.ws_url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"
        if batch:
            self.ws_url += "?batch=true"
        self._encode = msgpack_encoder.encode if msgpack else json_encoder.encode
        self._decode = (msgpack_server_decoder if msgpack else json_server_decoder).decode
        self._text = not msgpack
        self._refs = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._protocol = ClientProtocol(self, msgpack)
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._closed = False
        self.reconnects = 0

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    @property
    def _publishes(self) -> dict[Ref, tuple[bytes, Any]]:
        """The publishes sent and not confirmed yet, by ref."""
        return self._protocol.publishes

    @property
    def unconfirmed(self) -> int:
        """How many publishes wait for their confirm (they are resent after a reconnect)."""
        return len(self._protocol.publishes)

    @property
    def connected(self) -> bool:
        """Whether the WebSocket is open now."""
        return self._connected.is_set()

    async def connect(self) -> None:
        """Open the WebSocket now (it opens on first use otherwise).

        Raises:
            ClosedError: no connection within ``connect_timeout``.
            AuthError: the broker refused the credentials.
        """
        await self._ready()

    async def close(self) -> None:
        """Close the connection and the HTTP client; pending publishes fail with `ClosedError`."""
        if not self._closed:
            await self._shut()

    async def _shut(self, *tasks: asyncio.Task[None] | None) -> None:
        """Close the connection and the HTTP client, then stop ``tasks`` and the loop's own.

        Pending publishes fail with `ClosedError`; subscriptions end.
        """
        self._closed = True
        self._protocol.fail_all(ClosedError("the client was closed"), closed=True)
        for task in (*tasks, self._refresher):
            if task is not None:
                task.cancel()
        ws = self._ws
        if ws is not None:
            await ws.close()
        for task in (self._supervisor, *tasks, self._refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await RestClient.close(self)

    async def _send_subscribe(self, ws: ClientConnection, sub: ClientSubscription) -> None:
        ref = next(self._refs)
        self._protocol.subscribing_as(ref, sub)
        frame = Subscribe(queue=sub.queue, prefetch=sub.prefetch, ref=ref)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self._encode(frame), text=self._text)

    def _expect(self, ref: int) -> asyncio.Future[ServerFrame]:
        future: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        self._protocol.expect(ref, future)
        return future

    def _ensure_supervisor(self) -> None:
        if self._closed:
            raise ClosedError("the client was closed")
        if self._fatal is not None:
            raise self._fatal
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name="broker-client"
            )

    async def _ready(self) -> ClientConnection:
        """The open connection, waiting up to ``connect_timeout`` for one."""
        ws = self._ws
        if ws is not None and self._connected.is_set():
            return ws
        self._ensure_supervisor()
        waiter = asyncio.ensure_future(self._connected.wait())
        assert self._supervisor is not None, "just ensured"
        try:
            await asyncio.wait(
                {waiter, self._supervisor},
                timeout=self.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
        if self._fatal is not None:
            raise self._fatal
        ws = self._ws
        if ws is None or not self._connected.is_set():
            raise ClosedError(f"no connection to {self.ws_url} within {self.connect_timeout} s")
        return ws

    async def _open(self) -> ClientConnection:
        token = await self.access_token()
        return await connect(
            self.ws_url,
            additional_headers={"Authorization": f"Bearer {token}"},
            subprotocols=[Subprotocol("msgpack" if self.msgpack else "json")],
            ssl=self.tls if self.ws_url.startswith("wss") else None,
            compression=self.compression,
            max_size=None,
            open_timeout=self._http.timeout.connect or 10.0,
            proxy=None,
        )

    async def _supervise(self) -> None:
        policy = Reconnect(self.backoff, self.reconnect)
        while not self._closed:
            try:
                ws = await self._open()
            except InvalidStatus as exc:
                step = policy.refused(exc.response.status_code, self.can_renew())
                if step is Step.GIVE_UP:
                    self._give_up(_handshake_error(exc))
                    return
                if step is Step.RENEW:
                    try:
                        await self.refresh()
                    except RequestError as error:
                        self._give_up(error)
                        return
                    except (OSError, httpx.HTTPError) as error:
                        logger.debug("token refresh failed", error=repr(error))
            except AuthError as exc:
                self._give_up(exc)
                return
            except (OSError, TimeoutError, InvalidHandshake, RequestError, httpx.HTTPError) as exc:
                if policy.unreachable() is Step.GIVE_UP:
                    self._give_up(ClosedError(f"cannot connect to {self.ws_url}: {exc}"))
                    return
                logger.debug("broker connection failed", url=self.ws_url, error=repr(exc))
            else:
                policy.connected()
                await self._serve(ws)
                if self.closed:
                    return
                step = policy.lost(ws.close_code, self.can_renew())
                if step is Step.GIVE_UP:
                    self._give_up(ClosedError(f"connection lost: {_close_text(ws)}"))
                    return
                if step is Step.RENEW_NOW:
                    with contextlib.suppress(ClientError, OSError):
                        await self.refresh()
                    continue
                self.reconnects += 1
            await asyncio.sleep(policy.wait(random.uniform(0.5, 1.0)))

    async def _serve(self, ws: ClientConnection) -> None:
        """Run one connection: resubscribe, re-send, then read until it closes."""
        protocol = self._protocol
        subs = protocol.connection_made()
        self._ws = ws
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            for sub in subs:
                await self._send_subscribe(ws, sub)
            for data in protocol.unconfirmed():
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(data, text=self._text)
            self._connected.set()
            if self._refresher is None and self.can_renew():
                self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())
            await reader
        finally:
            self._connected.clear()
            self._ws = None
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            protocol.connection_lost()
        logger.debug("broker connection closed", url=self.ws_url, reason=_close_text(ws))

    async def _read(self, ws: ClientConnection) -> None:
        decode = self._decode
        receive = self._protocol.receive
        with contextlib.suppress(ConnectionClosed):
            while True:
                data = await ws.recv(decode=False)
                try:
                    frame = decode(data)
                except msgspec.DecodeError as exc:
                    logger.warning("unreadable frame from the broker", error=str(exc))
                    continue
                if isinstance(frame, ServerBatch):
                    for one in frame.frames:
                        receive(one)
                else:
                    receive(frame)

    async def _refresh_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(max(0.0, self._refresh_due() - time.time()))
            try:
                pair = await self.refresh()
            except (ClientError, OSError) as exc:
                logger.warning("token refresh failed", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            ws = self._ws
            if ws is not None and self._connected.is_set():
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(self._encode(Auth(token=pair.access_token)), text=self._text)

    def _give_up(self, error: BaseException) -> None:
        self._fatal = error
        self._protocol.fail_all(error, closed=self._closed)


def _handshake_error(exc: InvalidStatus) -> RequestError:
    response = exc.response
    code, detail = f"http_{response.status_code}", response.reason_phrase
    with contextlib.suppress(msgspec.DecodeError):
        body = msgspec.json.decode(response.body or b"{}")
        if isinstance(body, dict):
            code = str(body.get("code") or code)
            detail = str(body.get("detail") or detail)
    kind = AuthError if response.status_code == 401 else RequestError
    return kind(code, detail, response.status_code)


def _close_text(ws: ClientConnection) -> str:
    code, reason = ws.close_code, ws.close_reason
    return f"{code} {reason}".strip() if code is not None else "no close frame"

"""`Client`: the broker over one WebSocket (publish, subscribe) plus its REST API.

One connection carries every publish and subscription of a client. It opens
on first use and, when lost, is opened again with exponential backoff (with
jitter); then the client subscribes again and re-sends the publishes that
were not confirmed (at-least-once: a publish may then be stored twice; give
it a ``dedup_id`` to prevent that). Messages delivered on the lost
connection were requeued by the broker and come again, marked
``redelivered``; settling the old copies does nothing.

Acks and nacks are batched: those made in one turn of the event loop leave
in one frame. The access token is refreshed before it expires and handed to
the connection with an ``auth`` frame.
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

from broker_core.frames import (
    BATCH_BYTES,
    Ack,
    Auth,
    Authenticated,
    Confirm,
    Deliver,
    Error,
    Nack,
    Publish,
    ServerBatch,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    join_json,
    join_msgpack,
    json_encoder,
    json_server_decoder,
    msgpack_encoder,
    msgpack_server_decoder,
)

from .errors import AuthError, ClientError, ClosedError, RequestError
from .messages import Message
from .rest import DEFAULT_URL, RestClient, ssl_context

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from websockets.asyncio.client import ClientConnection

    from broker_core.frames import Ref, ServerFrame, ServerOne

__all__ = ["Client", "Subscription"]

_MAX_TAGS = 10_000
"""Most tags in one ack or nack frame (the server's limit)."""
_BATCH_FRAMES = 1000
"""A batch of publishes stops growing past this many frames (or `BATCH_BYTES`)."""
_FATAL_STATUSES = frozenset({400, 403, 404})
"""Handshake answers that retrying won't change."""


class _Pending:
    """A publish sent and not yet confirmed: its frame (to re-send) and its future."""

    __slots__ = ("data", "future")

    def __init__(self, data: bytes, future: asyncio.Future[int]) -> None:
        self.data = data
        self.future = future


class Subscription:
    """A push consumer of one queue: iterate it for messages, then `close` it.

    Made by `Client.subscribe`; it subscribes on first use (``async with``,
    ``async for`` or `start`) and again after every reconnection. At most
    ``prefetch`` messages are unsettled at once.
    """

    def __init__(self, client: Client, queue: str, prefetch: int) -> None:
        self.client = client
        self.queue = queue
        self.prefetch = prefetch
        self.server_id: int | None = None
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._ready: asyncio.Future[None] | None = None
        self._closed = False
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.queue!r} prefetch={self.prefetch}>"

    async def start(self) -> Subscription:
        """Subscribe now (once); return when the broker confirmed it.

        Raises:
            RequestError: the queue does not exist or the user may not consume from it.
        """
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                await self.client._add_subscription(self)
            except BaseException as exc:
                self._end(exc)
                raise
        await asyncio.shield(self._ready)
        return self

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self._ready is None or not self._ready.done():
            await self.start()
        client = self.client
        while True:
            message = await self._inbox.get()
            if message is None:
                self._inbox.put_nowait(None)  # every later call ends too
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            if message.generation == client._generation:
                return message
            # Delivered on a lost connection: the broker requeued it.

    async def get(self, wait: float | None = None) -> Message | None:
        """The next message, or ``None`` if none came within ``wait`` seconds."""
        try:
            async with asyncio.timeout(wait):
                return await self.__anext__()
        except TimeoutError:
            return None

    async def close(self) -> None:
        """Unsubscribe: the broker requeues what this subscription held unsettled."""
        if self._closed:
            return
        self._closed = True
        await self.client._remove_subscription(self)
        self._end(None)

    def _deliver(self, message: Message) -> None:
        self._inbox.put_nowait(message)

    def _confirmed(self, server_id: int) -> None:
        self.server_id = server_id
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _end(self, error: BaseException | None) -> None:
        self._closed = True
        self._error = error
        if self._ready is not None and not self._ready.done():
            if error is not None:
                self._ready.set_exception(error)
                self._ready.exception()  # retrieved: `start` re-raises it if awaited
            else:
                self._ready.set_result(None)
        self._inbox.put_nowait(None)


class Client(RestClient):
    """The broker's client: publish and subscribe over WebSocket, and the REST API.

    Args:
        url: the broker's base URL; ``/ws`` is its WebSocket (``https`` -> ``wss``).
        msgpack: use MessagePack frames instead of JSON.
        reconnect: reconnect when the connection is lost (else fail everything).
        backoff: initial and longest delay between reconnection attempts, in seconds.
        connect_timeout: how long a publish or ack waits for a connection (``None``: for ever).
        window: publishes `publish_many` keeps in flight.
        compression: ``"deflate"`` to compress frames (off by default: it costs CPU).
        batch: ask the broker for ``batch`` frames, and send the publishes of one
            event-loop turn as one (fewer WebSocket messages under load).
        **options: the `RestClient` arguments (credentials, ``insecure``, ``timeout``, ...).

    Use it as an async context manager (``async with Client(...) as client``)
    or call `close` at the end.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        msgpack: bool = False,
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.1, 5.0),
        connect_timeout: float | None = 30.0,
        window: int = 500,
        compression: str | None = None,
        batch: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(url, **options)
        self.msgpack = msgpack
        self.reconnect = reconnect
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.window = window
        self.compression = compression
        scheme, rest = self.url.split("://", 1) if "://" in self.url else ("http", self.url)
        self.batch = batch
        self.ws_url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"
        if batch:
            self.ws_url += "?batch=true"
        self._encode = msgpack_encoder.encode if msgpack else json_encoder.encode
        self._join: Callable[[list[bytes]], bytes | str] = join_msgpack if msgpack else join_json
        self._sends: set[asyncio.Task[None]] = set()
        self._content_encode = self._encode
        self._decode = (msgpack_server_decoder if msgpack else json_server_decoder).decode
        self._text = not msgpack
        self._refs = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._generation = 0
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._publishes: dict[Ref, _Pending] = {}
        self._replies: dict[Ref | None, asyncio.Future[ServerFrame]] = {}
        self._subscribing: dict[Ref | None, Subscription] = {}
        self._subs: set[Subscription] = set()
        self._by_server_id: dict[int, Subscription] = {}
        self._settle_out: dict[tuple[int, bool, bool, str | None], list[int]] = {}
        self._publish_out: list[bytes] = []
        self._publish_flush: asyncio.Handle | None = None
        self._fatal: BaseException | None = None
        self._closed = False
        self.reconnects = 0

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    @property
    def connected(self) -> bool:
        """Whether the WebSocket is open now."""
        return self._connected.is_set()

    @property
    def unconfirmed(self) -> int:
        """How many publishes wait for their confirm (they are resent after a reconnect)."""
        return len(self._publishes)

    async def connect(self) -> None:
        """Open the WebSocket now (it opens on first use otherwise).

        Raises:
            ClosedError: no connection within ``connect_timeout``.
            AuthError: the broker refused the credentials.
        """
        await self._ready()

    async def close(self) -> None:
        """Close the connection and the HTTP client; pending publishes fail with `ClosedError`."""
        if self._closed:
            return
        with contextlib.suppress(ClientError):
            await self.flush()
        self._closed = True
        self._fail_all(ClosedError("the client was closed"))
        for task in (self._flusher, self._refresher):
            if task is not None:
                task.cancel()
        ws = self._ws
        if ws is not None:
            await ws.close()
        for task in (self._supervisor, self._flusher, self._refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await super().close()

    # -- publish --------------------------------------------------------------------

    async def publish(
        self,
        queue: str,
        content: Any,
        *,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> int:
        """Publish one message; return its id once the broker committed it.

        ``options`` are the per-message options: ``priority`` (0-9),
        ``delay_ms``, ``ttl_ms``, ``dedup_id``.

        Raises:
            RequestError: the broker refused it (``queue_not_found``, ``forbidden``,
                ``queue_full``, ``rate_limited``, ...).
            ClosedError: the client closed before the confirm came.
        """
        future = await self._send_publish(queue, content, headers, options)
        return await future

    async def publish_many(
        self,
        queue: str,
        contents: Iterable[Any],
        *,
        headers: dict[str, str] | None = None,
        window: int | None = None,
        **options: Any,
    ) -> list[int]:
        """Publish many messages pipelined, ``window`` in flight; return their ids in order.

        Every publish is awaited even when one fails; then the first failure is raised.
        """
        window = window or self.window
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = []
        inflight = 0
        room: asyncio.Future[None] | None = None

        # A counter and one waiter, not a Semaphore: at tens of thousands of
        # publishes a second, its per-acquire bookkeeping showed in profiles.
        def settled(_: asyncio.Future[int]) -> None:
            nonlocal inflight
            inflight -= 1
            if room is not None and not room.done():
                room.set_result(None)

        try:
            for content in contents:
                while inflight >= window:
                    room = loop.create_future()
                    await room
                future = await self._send_publish(queue, content, headers, options)
                inflight += 1
                future.add_done_callback(settled)
                futures.append(future)
        finally:
            # Every publish is awaited, even when sending failed or we were cancelled.
            unsettled = [future for future in futures if not future.done()]
            if unsettled:
                await asyncio.wait(unsettled)
        ids: list[int] = []
        first: BaseException | None = None
        for future in futures:
            # Every outcome is read, so that no failure is reported as never retrieved.
            error = asyncio.CancelledError() if future.cancelled() else future.exception()
            if error is None:
                ids.append(future.result())
            elif first is None:
                first = error
        if first is not None:
            raise first
        return ids

    async def _send_publish(
        self, queue: str, content: Any, headers: dict[str, str] | None, options: dict[str, Any]
    ) -> asyncio.Future[int]:
        ref = next(self._refs)
        frame = Publish(
            queue=queue,
            content=msgspec.Raw(self._content_encode(content)),
            headers=headers,
            ref=ref,
            **options,
        )
        data = self._encode(frame)
        ws = await self._ready()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._publishes[ref] = _Pending(data, future)
        if self.batch:
            # The publishes of this turn of the loop leave together, as one batch.
            self._publish_out.append(data)
            if self._publish_flush is None:
                self._publish_flush = loop.call_soon(self._send_publishes, ws)
            return future
        with contextlib.suppress(ConnectionClosed):
            # If the connection is lost now, the reconnection re-sends it.
            await ws.send(data, text=self._text)
        return future

    def _send_publishes(self, ws: ClientConnection) -> None:
        self._publish_flush = None
        out, self._publish_out = self._publish_out, []
        if ws is not self._ws or not out:
            return  # the connection changed: the reconnection re-sends what is pending
        # Batches stay well under the broker's largest frame (1 MiB by default).
        chunks: list[list[bytes]] = [[]]
        size = 0
        for data in out:
            chunk = chunks[-1]
            if chunk and (size + len(data) > BATCH_BYTES or len(chunk) >= _BATCH_FRAMES):
                chunk = []
                chunks.append(chunk)
                size = 0
            chunk.append(data)
            size += len(data)
        messages = [chunk[0] if len(chunk) == 1 else self._join(chunk) for chunk in chunks]
        task = asyncio.get_running_loop().create_task(self._send_quietly(ws, messages))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send_quietly(self, ws: ClientConnection, messages: list[bytes | str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            for data in messages:
                await ws.send(data, text=self._text)

    # -- subscribe ------------------------------------------------------------------

    def subscribe(self, queue: str, prefetch: int = 10) -> Subscription:
        """A push consumer of ``queue`` holding at most ``prefetch`` unsettled messages.

        Use it as ``async with client.subscribe("jobs", 10) as sub: async for
        message in sub: ...`` (or iterate it directly and `Subscription.close`
        it at the end).
        """
        return Subscription(self, queue, prefetch)

    async def _add_subscription(self, sub: Subscription) -> None:
        self._ensure_supervisor()
        self._subs.add(sub)
        ws = self._ws
        if ws is not None:
            # A connection being set up took its list of subscriptions already.
            await self._send_subscribe(ws, sub)

    async def _send_subscribe(self, ws: ClientConnection, sub: Subscription) -> None:
        ref = next(self._refs)
        self._subscribing[ref] = sub
        frame = Subscribe(queue=sub.queue, prefetch=sub.prefetch, ref=ref)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self._encode(frame), text=self._text)

    async def _remove_subscription(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        await self.flush()  # settle before the broker requeues what is left
        server_id, sub.server_id = sub.server_id, None
        ws = self._ws
        if server_id is None or ws is None or not self._connected.is_set():
            return
        self._by_server_id.pop(server_id, None)
        ref = next(self._refs)
        reply = self._expect(ref)
        with contextlib.suppress(ConnectionClosed, TimeoutError, ClientError):
            await ws.send(
                self._encode(Unsubscribe(subscription=server_id, ref=ref)), text=self._text
            )
            async with asyncio.timeout(self.connect_timeout):
                await reply
        self._replies.pop(ref, None)

    def _expect(self, ref: int) -> asyncio.Future[ServerFrame]:
        future: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        self._replies[ref] = future
        return future

    # -- settle (the `Message` settler) ---------------------------------------------

    async def settle(
        self, message: Message, ack: bool, requeue: bool = True, reason: str | None = None
    ) -> None:
        """Ack or nack a message: REST-leased ones over REST, pushed ones in the next batch."""
        if message.tag is None:
            await super().settle(message, ack, requeue, reason)
            return
        if message.generation != self._generation or not self._connected.is_set():
            return  # its connection is gone: the broker requeued it
        key = (message.generation, ack, requeue, reason)
        self._settle_out.setdefault(key, []).append(message.tag)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_settles())

    async def _flush_settles(self) -> None:
        await asyncio.sleep(0)  # gather the acks of this turn of the loop
        self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Send the acks and nacks batched so far now (they otherwise leave at the next turn)."""
        out, self._settle_out = self._settle_out, {}
        ws = self._ws
        for (generation, ack, requeue, reason), tags in out.items():
            if ws is None or generation != self._generation:
                continue
            for start in range(0, len(tags), _MAX_TAGS):
                chunk = tags[start : start + _MAX_TAGS]
                frame = Ack(tags=chunk) if ack else Nack(tags=chunk, requeue=requeue, reason=reason)
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(self._encode(frame), text=self._text)

    # -- the connection -------------------------------------------------------------

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
            ssl=ssl_context(self.insecure) if self.ws_url.startswith("wss") else None,
            compression=self.compression,
            max_size=None,
            open_timeout=self._http.timeout.connect or 10.0,
            proxy=None,
        )

    async def _supervise(self) -> None:
        initial, longest = self.backoff
        delay = initial
        while not self._closed:
            try:
                ws = await self._open()
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status == 401 and self.can_renew():
                    try:
                        await self.refresh()
                    except RequestError as error:
                        self._give_up(error)
                        return
                    except (OSError, httpx.HTTPError) as error:
                        logger.debug("token refresh failed", error=repr(error))
                elif status == 401 or status in _FATAL_STATUSES or not self.reconnect:
                    self._give_up(_handshake_error(exc))
                    return
            except AuthError as exc:
                self._give_up(exc)
                return
            except (OSError, TimeoutError, InvalidHandshake, RequestError, httpx.HTTPError) as exc:
                if not self.reconnect:
                    self._give_up(ClosedError(f"cannot connect to {self.ws_url}: {exc}"))
                    return
                logger.debug("broker connection failed", url=self.ws_url, error=repr(exc))
            else:
                delay = initial
                await self._serve(ws)
                if self.closed:
                    return
                if not self.reconnect:
                    self._give_up(ClosedError(f"connection lost: {_close_text(ws)}"))
                    return
                if ws.close_code == 4001 and self.can_renew():
                    with contextlib.suppress(ClientError, OSError):
                        await self.refresh()
                    continue
                self.reconnects += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(longest, delay * 2)

    async def _serve(self, ws: ClientConnection) -> None:
        """Run one connection: resubscribe, re-send, then read until it closes."""
        self._generation += 1
        self._ws = ws
        subs = list(self._subs)
        self._by_server_id.clear()
        self._subscribing.clear()
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            for sub in subs:
                await self._send_subscribe(ws, sub)
            for pending in list(self._publishes.values()):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(pending.data, text=self._text)
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
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(ClosedError("connection lost"))
                    future.exception()
            self._replies.clear()
            for sub in self._subs:
                sub.server_id = None
        logger.debug("broker connection closed", url=self.ws_url, reason=_close_text(ws))

    async def _read(self, ws: ClientConnection) -> None:
        decode = self._decode
        dispatch = self._dispatch
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
                        dispatch(one)
                else:
                    dispatch(frame)

    def _dispatch(self, frame: ServerOne) -> None:
        match frame:
            case Deliver():
                sub = self._by_server_id.get(frame.subscription)
                if sub is not None:
                    sub._deliver(
                        Message(
                            queue=frame.queue,
                            message_id=frame.message_id,
                            raw=bytes(frame.content),
                            headers=frame.headers,
                            attempt=frame.attempt,
                            redelivered=frame.redelivered,
                            settler=self,
                            tag=frame.tag,
                            subscription=frame.subscription,
                            generation=self._generation,
                            msgpack=self.msgpack,
                        )
                    )
            case Confirm(ref=ref):
                pending = self._publishes.pop(ref, None)
                if pending is not None and not pending.future.done():
                    pending.future.set_result(frame.message_id)
            case Subscribed(ref=ref):
                sub = self._subscribing.pop(ref, None)
                if sub is not None:
                    self._by_server_id[frame.subscription] = sub
                    sub._confirmed(frame.subscription)
            case Error(ref=ref):
                self._on_error(frame, ref)
            case Unsubscribed(ref=None, reason=reason):
                # The server ended it (its queue was deleted).
                sub = self._by_server_id.pop(frame.subscription, None)
                if sub is not None:
                    self._subs.discard(sub)
                    sub.server_id = None
                    sub._end(RequestError("queue_not_found", f"subscription ended: {reason}"))
            case Unsubscribed(ref=ref) | Authenticated(ref=ref):
                reply = self._replies.pop(ref, None)
                if reply is not None and not reply.done():
                    reply.set_result(frame)

    def _on_error(self, frame: Error, ref: Any) -> None:
        error = RequestError(frame.code, frame.detail)
        if ref is not None:
            pending = self._publishes.pop(ref, None)
            if pending is not None:
                if not pending.future.done():
                    pending.future.set_exception(error)
                return
            sub = self._subscribing.pop(ref, None)
            if sub is not None:
                self._subs.discard(sub)
                sub._end(error)
                return
            reply = self._replies.pop(ref, None)
            if reply is not None:
                if not reply.done():
                    reply.set_exception(error)
                return
        logger.debug("broker error frame", code=frame.code, detail=frame.detail)

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
        self._fail_all(error)

    def _fail_all(self, error: BaseException) -> None:
        for pending in self._publishes.values():
            if not pending.future.done():
                pending.future.set_exception(error)
                pending.future.exception()
        self._publishes.clear()
        for sub in list(self._subs):
            sub._end(error if not self._closed else None)
        self._subs.clear()
        self._subscribing.clear()


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

"""`Client`: the broker over one WebSocket (publish, subscribe) plus its REST API.

The API over the connection: publishes (batched per event-loop turn),
subscriptions and settles (batched likewise). The connection itself, its
read and reconnection loops, is `transports.client.connection`; what the
client waits for (publishes to confirm, subscriptions, replies) is
`transports.client.protocol.ClientProtocol`, and when to reconnect is
`transports.client.reconnect.Reconnect`, neither of which does I/O.

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
from typing import TYPE_CHECKING, Any, overload

import msgspec
from websockets.exceptions import ConnectionClosed

from ..wire import (
    BATCH_BYTES,
    Ack,
    Nack,
    Publish,
    Unsubscribe,
    join_json,
    join_msgpack,
)
from .connection import BrokerConnection
from .errors import ClientError
from .rest import DEFAULT_URL
from .subscription import ClientSubscription

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from websockets.asyncio.client import ClientConnection

    from .messages import Message

__all__ = ["Client"]

_MAX_TAGS = 10_000
"""Most tags in one ack or nack frame (the server's limit)."""
_BATCH_FRAMES = 1000
"""A batch of publishes stops growing past this many frames (or `BATCH_BYTES`)."""


class Client(BrokerConnection):
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
        super().__init__(
            url,
            msgpack=msgpack,
            reconnect=reconnect,
            backoff=backoff,
            connect_timeout=connect_timeout,
            compression=compression,
            batch=batch,
            **options,
        )
        self.window = window
        self._join: Callable[[list[bytes]], bytes] = join_msgpack if msgpack else join_json
        self._sends: set[asyncio.Task[None]] = set()
        self._content_encode = self._encode
        self._flusher: asyncio.Task[None] | None = None
        self._settle_out: dict[tuple[int, bool, bool, str | None, int | None], list[int]] = {}
        self._publish_out: list[bytes] = []
        self._publish_flush: asyncio.Handle | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection and the HTTP client; pending publishes fail with `ClosedError`."""
        if self._closed:
            return
        with contextlib.suppress(ClientError):
            await self.flush()
        await self._shut(self._flusher)

    # -- publish --------------------------------------------------------------------

    @overload
    async def publish(
        self,
        queue: str,
        content: Any,
        *,
        headers: dict[str, str] | None = None,
        wait_result: None = None,
        **options: Any,
    ) -> int: ...

    @overload
    async def publish(
        self,
        queue: str,
        content: Any,
        *,
        headers: dict[str, str] | None = None,
        wait_result: float,
        **options: Any,
    ) -> dict[str, Any]: ...

    async def publish(
        self,
        queue: str,
        content: Any,
        *,
        headers: dict[str, str] | None = None,
        wait_result: float | None = None,
        **options: Any,
    ) -> int | dict[str, Any]:
        """Publish one message; return its id once the broker committed it.

        ``options`` are the per-message options: ``priority`` (0-9),
        ``delay_ms``, ``ttl_ms``, ``dedup_id``, ``group``. To wait for its result
        (request/reply), pass ``wait_result`` (seconds, at most 30): the
        publish goes over REST and returns the broker's answer, a dict with
        ``message_id``, ``status`` and, when it came in time, ``result``.

        Raises:
            RequestError: the broker refused it (``queue_not_found``, ``forbidden``,
                ``queue_full``, ``rate_limited``, ...).
            ClosedError: the client closed before the confirm came.
        """
        if wait_result is not None:
            if headers is not None:
                options["headers"] = headers
            return await self.publish_and_wait(queue, content, wait_result, **options)
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
        self._protocol.publishing(ref, data, future)
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

    async def _send_quietly(self, ws: ClientConnection, messages: list[bytes]) -> None:
        with contextlib.suppress(ConnectionClosed):
            for data in messages:
                await ws.send(data, text=self._text)

    # -- subscribe ------------------------------------------------------------------

    def subscribe(self, queue: str, prefetch: int = 10) -> ClientSubscription:
        """A push consumer of ``queue`` holding at most ``prefetch`` unsettled messages.

        Use it as ``async with client.subscribe("jobs", 10) as sub: async for
        message in sub: ...`` (or iterate it directly and `ClientSubscription.close`
        it at the end).
        """
        return ClientSubscription(self, queue, prefetch)

    async def _add_subscription(self, sub: ClientSubscription) -> None:
        self._ensure_supervisor()
        self._protocol.subscribe(sub)
        ws = self._ws
        if ws is not None:
            # A connection being set up took its list of subscriptions already.
            await self._send_subscribe(ws, sub)

    async def _remove_subscription(self, sub: ClientSubscription) -> None:
        protocol = self._protocol
        protocol.unsubscribe(sub)
        await self.flush()  # settle before the broker requeues what is left
        server_id = protocol.unsubscribing(sub)
        ws = self._ws
        if server_id is None or ws is None or not self._connected.is_set():
            return
        ref = next(self._refs)
        reply = self._expect(ref)
        with contextlib.suppress(ConnectionClosed, TimeoutError, ClientError):
            await ws.send(
                self._encode(Unsubscribe(subscription=server_id, ref=ref)), text=self._text
            )
            async with asyncio.timeout(self.connect_timeout):
                await reply
        protocol.replies.pop(ref, None)

    # -- settle (the `Message` settler) ---------------------------------------------

    async def settle(
        self,
        message: Message,
        ack: bool,
        requeue: bool = True,
        reason: str | None = None,
        delay_ms: int | None = None,
    ) -> None:
        """Ack or nack a message: REST-leased ones over REST, pushed ones in the next batch."""
        if message.tag is None:
            await super().settle(message, ack, requeue, reason, delay_ms)
            return
        if message.generation != self._protocol.generation or not self._connected.is_set():
            return  # its connection is gone: the broker requeued it
        key = (message.generation, ack, requeue, reason, delay_ms)
        self._settle_out.setdefault(key, []).append(message.tag)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_settles())

    async def ack_with_result(self, message: Message, result: Any) -> None:
        """Ack a pushed message at once with its result (one frame); a REST-leased one over REST."""
        if message.tag is None:
            await super().ack_with_result(message, result)
            return
        ws = self._ws
        if ws is None or message.generation != self._protocol.generation:
            return  # its connection is gone: the broker requeued it
        frame = Ack(tags=[message.tag], result=result)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self._encode(frame), text=self._text)

    async def _flush_settles(self) -> None:
        await asyncio.sleep(0)  # gather the acks of this turn of the loop
        self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Send the acks and nacks batched so far now (they otherwise leave at the next turn)."""
        out, self._settle_out = self._settle_out, {}
        ws = self._ws
        generation_now = self._protocol.generation
        for (generation, ack, requeue, reason, delay_ms), tags in out.items():
            if ws is None or generation != generation_now:
                continue
            for start in range(0, len(tags), _MAX_TAGS):
                chunk = tags[start : start + _MAX_TAGS]
                frame = (
                    Ack(tags=chunk)
                    if ack
                    else Nack(tags=chunk, requeue=requeue, reason=reason, delay_ms=delay_ms)
                )
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(self._encode(frame), text=self._text)

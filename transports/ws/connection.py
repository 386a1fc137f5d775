"""`Connection`: the socket side of a ``/ws`` connection, its read and write loops and its buffer.

The I/O shell around a `WsProtocol`, like websockets' ``asyncio/connection.py``
around its ``protocol.py``. `transports.ws.session.Session` adds what frames
do with the broker; this class moves bytes:

* the **reader** (`_read_loop`, run by the session in the endpoint's task)
  takes WebSocket messages, refuses those too big or undecodable, and hands
  each frame to `Session._handle` (a ``batch`` to `Session._handle_batch`);
  consecutive publishes to one queue, or consecutive acks, received together
  are held (`Session._hold`) and applied with one broker call, each frame
  still answered on its own;
* the **writer** task (`_write_loop`) drains the send buffer into the socket,
  one WebSocket message per frame, or one ``batch`` message of what is
  buffered when the client asked for batches;
* `_send_out` moves what the protocol answered into the send buffer.

Backpressure: the reader stops reading (so the client's TCP window closes)
while the send buffer holds ``ws_send_buffer_messages`` frames or
`_PAUSE_BYTES`, or as many publishes are unconfirmed. A client that stops
reading therefore stops acking, its subscriptions run out of credit and the
buffer stays bounded by its prefetch; one that stays behind longer than the
heartbeat misses its pong and is disconnected by the server (1011). Past
`_MAX_BYTES` buffered the connection is closed at once (1008).

Close codes: 1008 policy (rate limit, slow consumer), 4001 access token
expired, 4003 revoked (user deleted, disabled, password changed), 1009 frame
too big, 1011 internal error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import ApiError, InvalidInput, last_error
from ..wire import BATCH_BYTES, CLIENT_OPS, ClientBatch, peek
from .protocol import CLOSED, OPEN

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from loguru import Logger

    from broker_core.settings import Settings

    from ..wire import ClientFrame, ClientOne, Ref
    from .codec import Codec
    from .direct import DirectSocket
    from .protocol import WsProtocol

__all__ = [
    "CLOSE_EXPIRED",
    "CLOSE_INTERNAL",
    "CLOSE_POLICY",
    "CLOSE_REVOKED",
    "CLOSE_TOO_BIG",
    "Connection",
]

CLOSE_POLICY = 1008
"""Authentication failed, rate limit abused, or a slow consumer."""
CLOSE_REVOKED = 4003
"""The user was deleted or disabled, or its password changed (its token is revoked)."""
CLOSE_TOO_BIG = 1009
"""A frame passed ``ws_max_frame_bytes`` (uvicorn enforces it too)."""
CLOSE_INTERNAL = 1011
"""An unexpected server error; it is logged with its traceback."""
CLOSE_EXPIRED = 4001
"""The access token expired and no ``auth`` frame renewed it."""

_PAUSE_BYTES = 8 << 20
"""Buffered bytes past which the reader stops reading client frames."""
_MAX_BYTES = 64 << 20
"""Buffered bytes past which the connection is closed as a slow consumer."""
_WRITE_BYTES = 256 << 10
"""About the most bytes one direct transport write takes (then flow control is checked)."""


class Connection:
    """The loops, the send buffer and the close of one accepted WebSocket.

    Args:
        send: the ASGI ``send`` of the connection (already accepted).
        receive: its ASGI ``receive``.
        codec: the frame format the client chose.
        protocol: what the connection answers (its outbox is sent here).
        settings: the broker's settings (buffer and frame limits).
        log: the logger bound to the connection.
        batch: the client asked for ``batch`` frames: what is buffered leaves
            as one WebSocket message (up to `BATCH_BYTES`) instead of one each.
        direct: the server's short data path (`transports.ws.direct`), if it
            has one: the messages of a writer turn leave in one transport
            write, and what was received comes in at once.
    """

    def __init__(
        self,
        send: Callable[[Any], Awaitable[None]],
        receive: Callable[[], Awaitable[Any]],
        codec: Codec,
        protocol: WsProtocol,
        settings: Settings,
        log: Logger,
        *,
        batch: bool = False,
        direct: DirectSocket | None = None,
    ) -> None:
        self._send = send
        self._direct = direct
        self._receive = receive
        self._codec = codec
        self._protocol = protocol
        self._settings = settings
        self._log = log
        self._batch = batch
        self._loop = asyncio.get_running_loop()
        self._buffer: deque[bytes] = deque()
        self._buffered_bytes = 0
        self._buffer_limit = settings.ws_send_buffer_messages
        self._max_inflight = settings.ws_send_buffer_messages
        self._writer_wakeup: asyncio.Future[None] | None = None
        self._reader_wakeup: asyncio.Future[None] | None = None
        self.peak_buffered = 0
        self._closing: tuple[int, str] | None = None
        self._flush_on_close = True
        self._held_publishes = 0
        """Publishes taken by `_hold` and not yet sent to the broker (count as in flight)."""

    @property
    def closing(self) -> bool:
        """Whether the session is closing (frames that come now are dropped)."""
        return self._closing is not None

    @property
    def buffered(self) -> int:
        """Frames waiting in the send buffer."""
        return len(self._buffer)

    @property
    def inflight(self) -> int:
        """Publishes sent to the broker and not confirmed yet."""
        return self._protocol.inflight

    @property
    def peak_inflight(self) -> int:
        """The most publishes that were in flight at once."""
        return self._protocol.peak_inflight

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close the connection with ``code`` and ``reason``; requeue what it holds now.

        With ``flush``, buffered frames are sent first, and the confirms (or
        errors) of publishes in flight: a client told its publish is committed
        won't send it again.
        """
        protocol = self._protocol
        if self._closing is not None or protocol.state is CLOSED:
            return
        self._closing = (code, reason)
        self._flush_on_close = flush
        protocol.close(flush)
        self._log.info("websocket closing", code=code, reason=reason)
        if not flush:
            self._buffer.clear()
            self._buffered_bytes = 0
        self._closing_started()
        self._wake_writer()
        self._wake_reader()

    # -- writer ---------------------------------------------------------------------

    def _send_out(self) -> None:
        """Move what the protocol answered into the send buffer, and wake the writer."""
        frames = self._protocol.data_to_send()
        if not frames:
            return
        buffer = self._buffer
        buffer.extend(frames)
        # A loop, not sum(map(len, ...)): most calls move one frame (a delivery
        # made as an ack freed credit), where building the map costs more.
        size = self._buffered_bytes
        for data in frames:
            size += len(data)
        self._buffered_bytes = size
        length = len(buffer)
        if length > self.peak_buffered:
            self.peak_buffered = length
        waiter = self._writer_wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if size > _MAX_BYTES:
            self.close(CLOSE_POLICY, "slow consumer: send buffer limit exceeded", flush=False)

    def _wake_writer(self) -> None:
        waiter = self._writer_wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take(self) -> bytes:
        """The next WebSocket message to send: one frame, or a batch of what is buffered."""
        buffer = self._buffer
        data = buffer.popleft()
        size = len(data)
        if self._batch and buffer and size < BATCH_BYTES:
            frames = [data]
            while buffer and size < BATCH_BYTES:
                data = buffer.popleft()
                frames.append(data)
                size += len(data)
            self._buffered_bytes -= size
            return self._codec.join(frames)
        self._buffered_bytes -= size
        return data

    async def _write_loop(self) -> None:
        send = self._send
        buffer = self._buffer
        protocol = self._protocol
        binary = self._codec.binary
        event = self._codec.send_event
        direct = self._direct
        try:
            while True:
                while buffer:
                    if direct is not None:
                        if not direct.writable.is_set():
                            await direct.writable.wait()
                        messages = [self._take()]
                        size = len(messages[0])
                        while buffer and size < _WRITE_BYTES:
                            data = self._take()
                            messages.append(data)
                            size += len(data)
                        direct.write(messages, binary)
                    else:
                        await send(event(self._take()))
                    if self._reader_wakeup is not None:
                        self._wake_reader()
                if self._closing is not None and (
                    protocol.inflight == 0 or not self._flush_on_close
                ):
                    code, reason = self._closing
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return
                self._writer_wakeup = self._loop.create_future()
                await self._writer_wakeup
                self._writer_wakeup = None
                if direct is not None:
                    # One loop turn later: what the other callbacks of this turn
                    # buffer (deliveries, confirms) leaves in the same write.
                    await asyncio.sleep(0)
        except Exception as exc:
            # The client went away mid-send: the reader sees the disconnect.
            self._log.debug("websocket send failed", error=repr(exc))
            protocol.connection_lost()
            self._wake_reader()

    # -- reader ---------------------------------------------------------------------

    def _must_pause(self) -> bool:
        protocol = self._protocol
        return protocol.state is OPEN and (
            len(self._buffer) >= self._buffer_limit
            or self._buffered_bytes >= _PAUSE_BYTES
            or protocol.inflight + self._held_publishes >= self._max_inflight
        )

    def _wake_reader(self) -> None:
        waiter = self._reader_wakeup
        if waiter is not None and not waiter.done() and not self._must_pause():
            waiter.set_result(None)

    async def _paused(self) -> None:
        """Return once the reader may take another frame (see the backpressure above)."""
        while self._must_pause():
            self._reader_wakeup = self._loop.create_future()
            await self._reader_wakeup
            self._reader_wakeup = None

    async def _read_loop(self) -> None:
        receive = self._receive
        direct = self._direct
        max_bytes = self._settings.ws_max_frame_bytes
        while True:
            await self._paused()
            messages = await direct.receive_many() if direct is not None else (await receive(),)
            try:
                for index, message in enumerate(messages):
                    # Received at once, taken one by one: the pause holds between them too.
                    if index and self._must_pause():
                        await self._flush_held()
                        await self._paused()
                    if message["type"] != "websocket.receive":
                        return
                    if self._closing is not None:
                        continue  # draining until the close handshake completes
                    data = message.get("text")
                    if data is None:
                        data = message.get("bytes") or b""
                    if len(data) > max_bytes:
                        self.close(CLOSE_TOO_BIG, f"frame over {max_bytes} bytes", flush=False)
                        continue
                    try:
                        frame = self._codec.decode(data, self._settings.max_json_depth)
                    except (msgspec.DecodeError, InvalidInput) as exc:
                        self._bad_frame(data, exc)
                        continue
                    if self._hold(frame):
                        continue
                    await self._flush_held()
                    if isinstance(frame, ClientBatch):
                        await self._handle_batch(frame.frames)
                    elif not self._hold(frame):
                        await self._handle(frame)
            finally:
                await self._flush_held()

    def _bad_frame(self, data: str | bytes, exc: msgspec.DecodeError | InvalidInput) -> None:
        op, ref = peek(data, self._codec.binary)
        error: Exception = exc
        if isinstance(exc, msgspec.ValidationError):
            if op is None:
                error = ApiError(400, "invalid", "a frame is an object with an 'op'")
            elif not isinstance(op, str) or op not in CLIENT_OPS:
                ops = ", ".join(sorted(CLIENT_OPS))
                error = ApiError(
                    400, "unknown_op", f"unknown op {str(op)[:64]!r}; use one of {ops}"
                )
        self._fail(ref, error)

    def internal_error(self, exc: BaseException) -> None:
        """Log an unexpected exception with its traceback and close with 1011."""
        self._log.opt(exception=exc).error("websocket session failed")
        last_error.record(f"{type(exc).__name__}: {exc}")
        self.close(CLOSE_INTERNAL, "internal error")

    def _fail(self, ref: Ref | None, exc: BaseException, tags: list[int] | None = None) -> None:
        """Answer an error frame, or close with 1011 for an unexpected exception."""
        if self._protocol.fail(ref, exc, tags):
            self._send_out()
        else:
            self.internal_error(exc)

    def _closing_started(self) -> None:
        """Called once when the connection starts closing (the session requeues what it holds)."""

    async def _handle(self, frame: ClientOne) -> None:
        """Apply one client frame (answering an error frame for a refused one)."""
        raise NotImplementedError

    def _hold(self, frame: ClientFrame) -> bool:
        """Take ``frame`` into the held frames of this read (applied by `_flush_held`), or not.

        Consecutive publishes to one queue, or consecutive acks, received
        together are applied together (one broker call), each still answered
        on its own; the base class holds nothing.
        """
        return False

    async def _flush_held(self) -> None:
        """Apply the frames `_hold` took, in order."""

    async def _handle_batch(self, frames: list[ClientOne]) -> None:
        """Apply the frames of one ``batch`` in order."""
        raise NotImplementedError

    def _start_writer(self) -> asyncio.Task[None]:
        """Start the writer task; stop it with `_stop_writer`."""
        return self._loop.create_task(self._write_loop(), name="ws-writer")

    async def _stop_writer(self, writer: asyncio.Task[None]) -> None:
        if not writer.done():
            writer.cancel()
        with suppress(asyncio.CancelledError):
            await writer

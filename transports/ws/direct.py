"""The ``/ws`` frames' short way through uvicorn: many messages per transport write and read.

Through ASGI every WebSocket message is its own ``send`` (Litestar's socket
wrapper, each middleware's send wrapper, uvicorn's ``send``: flow control,
state checks, a frame serialised by ``websockets``, one ``transport.write``:
one system call) and its own ``receive`` (an ``asyncio.Queue`` get). With
one frame per message, a client that does not batch paid that per publish,
confirm, delivery and ack: measured with ``benchmarks.plain_frames`` it was
the largest share of the event loop's time.

`BrokerWebSocketProtocol` is uvicorn's sans-I/O ``websockets`` protocol
(``--ws websockets-sansio``) that also hands the application a `DirectSocket`
in the scope's extensions (`EXTENSION`). The ``/ws`` session uses it once
the connection is accepted, for its data messages only:

* `DirectSocket.write` frames the messages of one writer turn (each still
  its own WebSocket message, as the client sees it) and writes them with one
  ``transport.write``;
* `DirectSocket.receive_many` returns every message received so far;
* `BrokerWebSocketProtocol.data_received` reads whole, final, masked text
  and binary frames itself (a header, a mask, a payload): the ``websockets``
  parser (a generator per frame, an enum per opcode, a ``Frame`` object)
  was a tenth of the loop's time with one frame per message. Any other
  frame (ping, pong, close, a fragment, anything malformed or too big) goes,
  whole, through ``websockets``, which answers it as before.

The handshake, the close and every other route still go through ASGI; a
server without the extension (another ASGI server, a test client) gets the
ordinary path, with the same frames on the wire.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a websockets built without its C extension
    from websockets.utils import apply_mask

if TYPE_CHECKING:
    from collections.abc import Sequence

    from websockets.http11 import Request

__all__ = ["EXTENSION", "BrokerWebSocketProtocol", "DirectSocket"]

EXTENSION = "wsbroker.direct"
"""The key of the `DirectSocket` in the ASGI scope's ``extensions``."""

_TEXT, _BINARY = 0x81, 0x82
"""The first header byte of a final, unmasked text or binary frame (RFC 6455 section 5.2)."""
_PAUSE_QUEUED = 64
"""Messages waiting for the application past which the socket stops being read."""
_MASKED = 0x80
"""The mask bit of a frame's second header byte: every client frame has it (section 5.3)."""
_MEDIUM = struct.Struct("!BBH")
_LARGE = struct.Struct("!BBQ")


def _header(first: int, length: int) -> bytes:
    """A server frame's header (servers never mask) for a payload of ``length`` bytes."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _MEDIUM.pack(first, 126, length)
    return _LARGE.pack(first, 127, length)


class DirectSocket:
    """The data path of one accepted WebSocket, beside its ASGI ``send`` and ``receive``.

    Args:
        protocol: the connection's uvicorn protocol.
    """

    __slots__ = ("_protocol", "writable")

    def __init__(self, protocol: BrokerWebSocketProtocol) -> None:
        self._protocol = protocol
        self.writable = protocol.writable
        """Set while the transport takes more (uvicorn's flow control); await it when clear."""

    def write(self, messages: Sequence[bytes], binary: bool) -> None:
        """Send ``messages``, each as its own WebSocket message, in one transport write.

        Raises:
            ClientDisconnected: the connection is gone or closing (as ASGI ``send`` would).
        """
        protocol = self._protocol
        conn = protocol.conn
        if protocol.disconnected or protocol.close_sent or conn.state is not State.OPEN:
            raise ClientDisconnected
        if conn.extensions:
            # Compression negotiated (permessage-deflate): websockets frames each message.
            for payload in messages:
                if binary:
                    conn.send_binary(payload)
                else:
                    conn.send_text(payload)
            protocol.transport.writelines(conn.data_to_send())
            return
        first = _BINARY if binary else _TEXT
        parts: list[bytes] = []
        append = parts.append
        for payload in messages:
            append(_header(first, len(payload)))
            append(payload)
        protocol.transport.writelines(parts)

    async def receive_many(self) -> list[Any]:
        """Every ASGI event received so far (waits for one if there is none)."""
        protocol = self._protocol
        queue = protocol.queue
        events = [await queue.get()]
        while not queue.empty():
            events.append(queue.get_nowait())
        if protocol.read_paused:
            protocol.read_paused = False
            protocol.transport.resume_reading()
        return events


class BrokerWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with a `DirectSocket` in the scope (``ws=``).

    Reading pauses once `_PAUSE_QUEUED` messages wait for the application,
    not at the first: uvicorn paused and resumed the socket around every read
    (two ``epoll_ctl`` calls each), and the session bounds what it takes in
    itself (`transports.ws.connection`).
    """

    _unread: bytearray | None = None
    """The start of a frame whose end has not arrived yet."""
    _needed = 0
    """How many bytes `_unread` must hold before another frame can be read."""
    _own_reader = True
    """Whether `data_received` still reads data frames itself (see `_read_frames`)."""

    def data_received(self, data: bytes) -> None:
        """Read what arrived: data frames here, everything else through ``websockets``."""
        unread = self._unread
        if unread is not None:
            unread += data  # in place: a large frame in many reads is copied once
            if len(unread) < self._needed:
                return
            data = bytes(unread)
            self._unread = None
        conn = self.conn
        if self._own_reader and conn.state is State.OPEN and not conn.extensions:
            self._read_frames(data)
            return
        early = self.handshake_initiated  # bytes after the request, before the accept
        super().data_received(data)
        # Frames sent before the handshake's answer went to websockets' parser,
        # which may be inside one now: it keeps the connection.
        if (
            conn.state is State.CONNECTING
            and self.handshake_initiated
            and (early or conn.reader.buffer or not data.endswith(b"\r\n\r\n"))
        ):
            self._own_reader = False

    def _read_frames(self, data: bytes) -> None:
        """Take the whole frames of ``data``; keep the rest in `_unread`.

        A final text or binary frame is read here. Any other whole frame is
        handed to ``websockets`` (``super().data_received``) on its own, so
        its parser always starts at a frame boundary and answers pings,
        pongs, closes and fragments as it does without this reader. A frame
        that ``websockets`` must refuse (unmasked, reserved bits, too big)
        hands it everything from there on, and this reader stops.
        """
        conn = self.conn
        max_size = conn.max_message_size
        end = len(data)
        at = 0
        needed = 2
        while end - at >= 2 and not self.close_sent:
            first, second = data[at], data[at + 1]
            length = second & 0x7F
            start = at + 6  # two header bytes and the mask
            if length == 126:
                if end - at < 4:
                    needed = 4
                    break
                length = int.from_bytes(data[at + 2 : at + 4])
                start += 2
            elif length == 127:
                if end - at < 10:
                    needed = 10
                    break
                length = int.from_bytes(data[at + 2 : at + 10])
                start += 8
            if (
                not second & _MASKED
                or first & 0x70  # reserved bits, with no extension to claim them
                or (max_size is not None and length > max_size)
            ):
                self._own_reader = False
                super().data_received(data[at:])
                return
            stop = start + length
            if stop > end:
                needed = stop - at
                break
            if first in (_TEXT, _BINARY) and conn.current_size is None:
                self.curr_msg_data_type = "text" if first == _TEXT else "bytes"
                self.frames = [apply_mask(data[start:stop], data[start - 4 : start])]
                self.send_receive_event_to_app()
            else:
                super().data_received(data[at:stop])
                if conn.state is not State.OPEN:
                    at = stop
                    break
            at = stop
        if at < end:
            if conn.state is State.OPEN and not self.close_sent:
                self._unread = bytearray(data[at:])
                self._needed = needed
            else:
                super().data_received(data[at:])

    def send_receive_event_to_app(self) -> None:
        """Queue a received message for the app (uvicorn's, with the later pause)."""
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past the app's close: reads stay on until the peer's close reply
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.logger.exception("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused and self.queue.qsize() >= _PAUSE_QUEUED:
            self.read_paused = True
            self.transport.pause_reading()

    def handle_connect(self, event: Request) -> None:
        """Start the ASGI app as uvicorn does, its scope carrying the `DirectSocket`."""
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused before the app ran
            scope["extensions"][EXTENSION] = DirectSocket(self)

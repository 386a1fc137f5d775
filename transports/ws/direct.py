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
* `DirectSocket.receive_many` returns every message received so far.

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

    def write(self, messages: Sequence[str | bytes], binary: bool) -> None:
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
            for data in messages:
                payload = data.encode() if isinstance(data, str) else data
                if binary:
                    conn.send_binary(payload)
                else:
                    conn.send_text(payload)
            protocol.transport.writelines(conn.data_to_send())
            return
        first = _BINARY if binary else _TEXT
        parts: list[bytes] = []
        append = parts.append
        for data in messages:
            payload = data.encode() if isinstance(data, str) else data
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

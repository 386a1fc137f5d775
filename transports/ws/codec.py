"""`Codec`: how one WebSocket connection encodes frames, JSON text or MessagePack binary.

Message bodies are stored as JSON. A JSON connection moves them as they are
(`msgspec.Raw`); a MessagePack connection converts a body once on the way in
and once on the way out, so its publishers and consumers see MessagePack
values (binary values become base64 strings in storage).

Both check what comes in (`transports.decoding`): a frame with invalid UTF-8
or nested too deep raises `InvalidEncoding` or `TooDeep`, like any decode error
answered with an ``error`` frame. A stored body that can't be sent raises
`Undeliverable` from `content_out`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ..decoding import check_json, deliverable
from ..errors import InvalidEncoding, TooDeep
from ..wire import (
    join_json,
    join_msgpack,
    json_client_decoder,
    json_encoder,
    msgpack_client_decoder,
    msgpack_encoder,
)

if TYPE_CHECKING:
    from litestar.types import WebSocketSendEvent

    from ..wire import ClientFrame

__all__ = ["JSON", "MSGPACK", "SUBPROTOCOLS", "Codec", "Undeliverable", "pick"]

_json_any = msgspec.json.Decoder()
_msgpack_any = msgspec.msgpack.Decoder()


class Undeliverable(Exception):
    """A stored body breaks the input rule (stored before it): no consumer can be sent it."""


class Codec:
    """JSON text frames (the default): bodies pass through unchanged."""

    name = "json"
    binary = False

    def decode(self, data: str | bytes, max_depth: int) -> ClientFrame:
        """Decode one client frame.

        Raises:
            InvalidEncoding: a string is not valid UTF-8 (a lone surrogate included).
            TooDeep: the frame nests deeper than ``max_depth``.
            msgspec.DecodeError: not JSON, or (`msgspec.ValidationError`) not a frame.
        """
        check_json(data, max_depth)
        frame: ClientFrame = json_client_decoder.decode(data)
        return frame

    def encode(self, frame: Any) -> bytes:
        """Encode one server frame as the payload of a WebSocket message (UTF-8 JSON).

        Bytes, not text: the direct path (`transports.ws.direct`) frames them
        as they are; only an ASGI send takes text (`send_event`).
        """
        return json_encoder.encode(frame)

    def join(self, frames: list[Any]) -> bytes:
        """One ``batch`` message of frames this codec encoded."""
        return join_json(frames)

    def send_event(self, data: bytes) -> WebSocketSendEvent:
        """The ASGI ``websocket.send`` event of an encoded message: text."""
        return {"type": "websocket.send", "bytes": None, "text": data.decode()}

    def content_in(self, content: msgspec.Raw, max_depth: int) -> msgspec.Raw:
        """The JSON body to store for a published ``content`` (`decode` checked it)."""
        return content

    def content_out(self, body: bytes) -> msgspec.Raw:
        """The ``content`` of a deliver frame for a stored JSON body.

        Raises:
            Undeliverable: the body breaks the input rule (`transports.decoding.deliverable`).
        """
        if not deliverable(body):
            raise Undeliverable
        return msgspec.Raw(body)


class MsgpackCodec(Codec):
    """MessagePack binary frames (subprotocol ``msgpack``): bodies are converted from/to JSON."""

    name = "msgpack"
    binary = True

    def decode(self, data: str | bytes, max_depth: int) -> ClientFrame:
        """Decode one client frame; text frames are refused on a MessagePack connection.

        The frame's own fields are flat; its ``content`` is checked by `content_in`.
        """
        if isinstance(data, str):
            raise msgspec.DecodeError("expected a binary MessagePack frame, got a text frame")
        try:
            frame: ClientFrame = msgpack_client_decoder.decode(data)
        except RecursionError:
            raise TooDeep(max_depth) from None
        except msgspec.DecodeError as exc:
            if "UTF-8" in str(exc):
                raise InvalidEncoding(str(exc)) from None
            raise
        return frame

    def encode(self, frame: Any) -> bytes:
        """Encode one server frame as a binary WebSocket message."""
        return msgpack_encoder.encode(frame)

    def join(self, frames: list[Any]) -> bytes:
        """One ``batch`` message of MessagePack frames."""
        return join_msgpack(frames)

    def send_event(self, data: bytes) -> WebSocketSendEvent:
        """The ASGI ``websocket.send`` event of an encoded message: binary."""
        return {"type": "websocket.send", "bytes": data, "text": None}

    def content_in(self, content: msgspec.Raw, max_depth: int) -> msgspec.Raw:
        """Re-encode a MessagePack body as JSON, held to the JSON input rule.

        Raises:
            msgspec.ValidationError: the value has no JSON form.
            InvalidEncoding: a string in it is not valid UTF-8.
            TooDeep: it nests deeper than ``max_depth``.
        """
        try:
            body = json_encoder.encode(_msgpack_any.decode(content))
        except RecursionError:
            raise TooDeep(max_depth) from None
        except msgspec.DecodeError as exc:
            if "UTF-8" in str(exc):
                raise InvalidEncoding(str(exc)) from None
            raise msgspec.ValidationError(f"content cannot be stored as JSON: {exc}") from None
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise msgspec.ValidationError(f"content cannot be stored as JSON: {exc}") from None
        try:
            check_json(body, max_depth - 1)  # the frame around it is one level
        except TooDeep:
            raise TooDeep(max_depth) from None
        return msgspec.Raw(body)

    def content_out(self, body: bytes) -> msgspec.Raw:
        """Re-encode a stored JSON body as MessagePack.

        A JSON value MessagePack can't hold (an integer beyond 64 bits) is sent
        as the JSON text instead.

        Raises:
            Undeliverable: the body breaks the input rule (`transports.decoding.deliverable`).
        """
        if not deliverable(body):
            raise Undeliverable
        try:
            return msgspec.Raw(msgpack_encoder.encode(_json_any.decode(body)))
        except (OverflowError, TypeError, ValueError, msgspec.EncodeError):
            return msgspec.Raw(msgpack_encoder.encode(body.decode()))


JSON = Codec()
MSGPACK = MsgpackCodec()

SUBPROTOCOLS = {"json": JSON, "msgpack": MSGPACK}
"""The subprotocols the endpoint speaks; without one, JSON."""


def pick(offered: list[str]) -> tuple[str | None, Codec]:
    """The first subprotocol the client offered that we speak, and its codec (else JSON)."""
    for name in offered:
        codec = SUBPROTOCOLS.get(name)
        if codec is not None:
            return name, codec
    return None, JSON

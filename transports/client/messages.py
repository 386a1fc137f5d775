"""`Message`: a delivered message, settled with `Message.ack` or `Message.nack`."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

__all__ = ["Message", "Settler"]

_json = msgspec.json.Decoder()
_msgpack = msgspec.msgpack.Decoder()


class Settler(Protocol):
    """Whoever settles a message: the REST client, or the WebSocket client that got it."""

    async def settle(
        self,
        message: Message,
        ack: bool,
        requeue: bool = True,
        reason: str | None = None,
        delay_ms: int | None = None,
    ) -> None:
        """Ack (``ack``) or nack the message (a requeue after ``delay_ms`` if given)."""

    async def ack_with_result(self, message: Message, result: Any) -> None:
        """Ack the message, keeping ``result`` (any JSON value) as its result."""


class Message:
    """A message leased to this client, over WebSocket (push) or REST (pull).

    ``content`` is the decoded body (decoded on first access); ``raw`` its
    bytes as received (JSON, or MessagePack on a ``msgpack`` connection).
    ``attempt`` is 1 on the first delivery; ``redelivered`` is true from the
    second on. Settle it once with `ack` or `nack`; a message delivered on a
    connection that was lost since is requeued by the broker, so settling it
    does nothing and it comes again.
    """

    __slots__ = (
        "_content",
        "_settled",
        "_settler",
        "attempt",
        "generation",
        "headers",
        "message_id",
        "msgpack",
        "queue",
        "raw",
        "redelivered",
        "subscription",
        "tag",
    )

    def __init__(
        self,
        *,
        queue: str,
        message_id: int,
        raw: bytes,
        headers: dict[str, str] | None,
        attempt: int,
        redelivered: bool,
        settler: Settler,
        tag: int | None = None,
        subscription: int | None = None,
        generation: int = 0,
        msgpack: bool = False,
    ) -> None:
        self.queue = queue
        self.message_id = message_id
        self.raw = raw
        self.headers = headers
        self.attempt = attempt
        self.redelivered = redelivered
        self.tag = tag
        self.subscription = subscription
        self.generation = generation
        self.msgpack = msgpack
        self._settler = settler
        self._settled = False
        self._content: Any = _UNSET

    def __repr__(self) -> str:
        return f"<Message {self.message_id} of {self.queue!r} attempt={self.attempt}>"

    @property
    def content(self) -> Any:
        """The message's body, decoded from JSON (or MessagePack)."""
        if self._content is _UNSET:
            self._content = (_msgpack if self.msgpack else _json).decode(self.raw)
        return self._content

    @property
    def settled(self) -> bool:
        """Whether `ack` or `nack` was called."""
        return self._settled

    def to_dict(self) -> dict[str, Any]:
        """The message as a plain dict (what ``broker consume`` prints)."""
        return {
            "queue": self.queue,
            "message_id": self.message_id,
            "content": self.content,
            "headers": self.headers,
            "attempt": self.attempt,
            "redelivered": self.redelivered,
        }

    async def ack(self, result: Any = None) -> None:
        """Settle the message as processed (a second settle does nothing).

        ``result`` (any JSON value) is kept with the message: whoever waits
        for it (``publish(..., wait_result=S)``, ``GET /messages/{id}/result``) gets it.
        """
        if not self._settled:
            self._settled = True
            if result is None:
                await self._settler.settle(self, True)
            else:
                await self._settler.ack_with_result(self, result)

    async def nack(
        self, requeue: bool = True, reason: str | None = None, delay_ms: int | None = None
    ) -> None:
        """Give the message back: requeued (redelivered later) or, without ``requeue``, failed.

        ``reason`` is kept as the message's ``last_error``. A requeue waits
        ``delay_ms`` if given, else the queue's ``retry`` back-off.
        """
        if not self._settled:
            self._settled = True
            await self._settler.settle(self, False, requeue, reason, delay_ms)


class _Unset:
    __slots__ = ()


_UNSET: Any = _Unset()

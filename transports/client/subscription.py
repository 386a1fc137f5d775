"""`ClientSubscription`: a push consumer as the client's user sees it, an async iterator.

It is the handle, not the bookkeeping: `ClientProtocol` hands it the messages
delivered for it and tells it when the broker confirmed or ended it; the
`Client` subscribes it again after every reconnection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .client import Client
    from .messages import Message

__all__ = ["ClientSubscription"]


class ClientSubscription:
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
        return f"<ClientSubscription {self.queue!r} prefetch={self.prefetch}>"

    async def start(self) -> ClientSubscription:
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

    async def __aenter__(self) -> ClientSubscription:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        if self._ready is None or not self._ready.done():
            await self.start()
        protocol = self.client._protocol
        while True:
            message = await self._inbox.get()
            if message is None:
                self._inbox.put_nowait(None)  # every later call ends too
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            if message.generation == protocol.generation:
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

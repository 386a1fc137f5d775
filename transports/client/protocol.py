"""`ClientProtocol`: what the client's WebSocket connection is waiting for, without the socket.

Sans I/O, like websockets' ``protocol.py``: no socket, no asyncio. It keeps
the bookkeeping of one client across its connections: the publishes sent and
not confirmed (with their frames, to re-send after a reconnection), the
subscriptions and which server id each has on the current connection, the
requests waiting for their reply, and the connection's ``generation`` (a
message delivered on an older connection was requeued by the broker, so it
is neither handed out nor settled). `receive` applies each server frame.

The shell, `transports.client.client.Client`, owns the connection: it opens
it, reads frames into `receive`, sends what it must and sleeps between
reconnections (`transports.client.reconnect`). What waits for an answer is
anything with a `Waiter`'s methods (an `asyncio.Future` in the shell).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from loguru import logger

from ..wire import Authenticated, Confirm, Deliver, Error, Subscribed, Unsubscribed
from .errors import ClosedError, RequestError
from .messages import Message

if TYPE_CHECKING:
    from ..wire import Ref, ServerFrame, ServerOne
    from .messages import Settler
    from .subscription import ClientSubscription

__all__ = ["ClientProtocol", "Waiter"]

T = TypeVar("T", contravariant=True)


class Waiter(Protocol[T]):
    """Whatever waits for one answer: an `asyncio.Future` (or a `concurrent.futures.Future`)."""

    def done(self) -> bool:
        """Whether it has its answer."""

    def set_result(self, result: T, /) -> None:
        """Answer it."""

    def set_exception(self, exception: BaseException, /) -> None:
        """Fail it."""

    def exception(self) -> BaseException | None:
        """Its failure (reading it marks it retrieved)."""


class ClientProtocol:
    """A client's publishes, subscriptions and requests in flight, across its connections.

    Args:
        settler: who settles the messages delivered (the `Client`).
        msgpack: the connection speaks MessagePack (bodies are MessagePack).
    """

    def __init__(self, settler: Settler, msgpack: bool) -> None:
        self.settler = settler
        self.msgpack = msgpack
        self.generation = 0
        # ref -> (the encoded publish frame, its waiter): re-sent on a new connection.
        self.publishes: dict[Ref, tuple[bytes, Waiter[int]]] = {}
        self.replies: dict[Ref | None, Waiter[ServerFrame]] = {}
        self.subscribing: dict[Ref | None, ClientSubscription] = {}
        self.subscriptions: set[ClientSubscription] = set()
        self.by_server_id: dict[int, ClientSubscription] = {}

    # -- what the client sends ------------------------------------------------------

    def publishing(self, ref: Ref, data: bytes, waiter: Waiter[int]) -> None:
        """A publish frame is being sent: ``waiter`` gets its message id, or its error."""
        self.publishes[ref] = (data, waiter)

    def subscribing_as(self, ref: Ref, subscription: ClientSubscription) -> None:
        """A ``subscribe`` frame with ``ref`` is being sent for ``subscription``."""
        self.subscribing[ref] = subscription

    def expect(self, ref: Ref, waiter: Waiter[ServerFrame]) -> None:
        """``waiter`` gets the reply to the request with ``ref`` (or its error)."""
        self.replies[ref] = waiter

    def subscribe(self, subscription: ClientSubscription) -> None:
        """Keep ``subscription``: it is made again on every new connection."""
        self.subscriptions.add(subscription)

    def unsubscribe(self, subscription: ClientSubscription) -> None:
        """Stop making ``subscription`` on new connections (its deliveries still come)."""
        self.subscriptions.discard(subscription)

    def unsubscribing(self, subscription: ClientSubscription) -> int | None:
        """Forget ``subscription``'s server id (its deliveries stop); return it, if it had one."""
        server_id, subscription.server_id = subscription.server_id, None
        if server_id is not None:
            self.by_server_id.pop(server_id, None)
        return server_id

    # -- the connection -------------------------------------------------------------

    def connection_made(self) -> list[ClientSubscription]:
        """A new connection is open: return the subscriptions to make again on it.

        Messages delivered on the connections before are stale from now on.
        """
        self.generation += 1
        self.by_server_id.clear()
        self.subscribing.clear()
        return list(self.subscriptions)

    def unconfirmed(self) -> list[bytes]:
        """The frames of the publishes not confirmed yet, to send again on a new connection."""
        return [data for data, _ in self.publishes.values()]

    def connection_lost(self) -> None:
        """The connection is gone: its requests fail, its subscriptions have no server id."""
        for waiter in self.replies.values():
            if not waiter.done():
                waiter.set_exception(ClosedError("connection lost"))
                waiter.exception()
        self.replies.clear()
        for subscription in self.subscriptions:
            subscription.server_id = None

    def fail_all(self, error: BaseException, closed: bool) -> None:
        """Fail every publish and end every subscription (with ``error`` unless ``closed``)."""
        for _, waiter in self.publishes.values():
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()
        self.publishes.clear()
        for subscription in list(self.subscriptions):
            subscription._end(error if not closed else None)
        self.subscriptions.clear()
        self.subscribing.clear()

    # -- what the server sends ------------------------------------------------------

    def receive(self, frame: ServerOne) -> None:
        """Apply one server frame (a ``batch`` is applied frame by frame)."""
        match frame:
            case Deliver():
                subscription = self.by_server_id.get(frame.subscription)
                if subscription is not None:
                    subscription._deliver(
                        Message(
                            queue=frame.queue,
                            message_id=frame.message_id,
                            raw=bytes(frame.content),
                            headers=frame.headers,
                            attempt=frame.attempt,
                            redelivered=frame.redelivered,
                            settler=self.settler,
                            tag=frame.tag,
                            subscription=frame.subscription,
                            generation=self.generation,
                            msgpack=self.msgpack,
                        )
                    )
            case Confirm(ref=ref):
                pending = self.publishes.pop(ref, None)
                if pending is not None and not pending[1].done():
                    pending[1].set_result(frame.message_id)
            case Subscribed(ref=ref):
                subscription = self.subscribing.pop(ref, None)
                if subscription is not None:
                    self.by_server_id[frame.subscription] = subscription
                    subscription._confirmed(frame.subscription)
            case Error(ref=ref):
                self._error(frame, ref)
            case Unsubscribed(ref=None, reason=reason):
                # The server ended it (its queue was deleted).
                subscription = self.by_server_id.pop(frame.subscription, None)
                if subscription is not None:
                    self.subscriptions.discard(subscription)
                    subscription.server_id = None
                    subscription._end(
                        RequestError("queue_not_found", f"subscription ended: {reason}")
                    )
            case Unsubscribed(ref=ref) | Authenticated(ref=ref):
                reply = self.replies.pop(ref, None)
                if reply is not None and not reply.done():
                    reply.set_result(frame)

    def _error(self, frame: Error, ref: Any) -> None:
        error = RequestError(frame.code, frame.detail)
        if ref is not None:
            pending = self.publishes.pop(ref, None)
            if pending is not None:
                if not pending[1].done():
                    pending[1].set_exception(error)
                return
            subscription = self.subscribing.pop(ref, None)
            if subscription is not None:
                self.subscriptions.discard(subscription)
                subscription._end(error)
                return
            reply = self.replies.pop(ref, None)
            if reply is not None:
                if not reply.done():
                    reply.set_exception(error)
                return
        logger.debug("broker error frame", code=frame.code, detail=frame.detail)

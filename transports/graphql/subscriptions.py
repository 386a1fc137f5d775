"""The GraphQL ``Subscription`` root: consume a queue, watch queue events, watch stats.

* ``messages(queue, prefetch)`` makes the subscription a push consumer of the
  queue, like a WebSocket subscription: the queue's actor hands it at most
  ``prefetch`` unsettled messages (credit), each leased; the client settles
  them with the ``ack``/``nack`` mutations, which gives the credit back. When
  the subscription ends (``complete``/``stop``, connection closed), the
  consumer is removed and whatever it still held is requeued, marked
  redelivered (DESIGN.md, Data flow 6). The actor's deliveries land in an
  `Inbox` that credit bounds, so it never blocks the actor and never grows
  past ``prefetch``. When the queue is deleted, the actor's ``on_close``
  callback ends the subscription with ``queue_not_found``, as it ends a
  WebSocket subscription.
* ``queueEvents(queue)`` feeds dashboards. The broker calls every listener
  synchronously from the queue actors, so an `EventFeed` only appends to a
  bounded buffer; when a subscriber reads too slowly the oldest events are
  dropped and counted, and the next event it gets says how many it ``missed``
  (the per-client queue policy of websockets' broadcast guide). Publishing is
  never slowed by a dashboard.
* ``stats(intervalMs)`` pushes the ``/stats`` snapshot periodically.

Each holds a `Held` (`transports.graphql.context`): when its user may no
longer hold it (``consume`` on the queue, sight of the queue, or the user
itself), it raises an error ``revoked`` and completes within 1 s of the
change (DESIGN.md, "Trust").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

import strawberry

from broker_core.auth import Action, allowed
from broker_core.errors import QueueNotFound
from broker_core.permissions import require, require_visible, visible
from broker_core.service_tokens import STATS_READ, require_scope

from ..decoding import deliverable, fail_undeliverable
from ..errors import ApiError
from ..observability.stats import build_stats
from ..operations import check_prefetch
from .context import Held, context_of
from .results import ResultsSubscription
from .types import EventDelivery, Message, QueueEvent, Stats

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from broker_core.auth import User
    from broker_core.messages import Entry, MessageView, QueueEvent as QueueEventStruct

    from ..observability.stats import StatsResponse
    from ..observability.tracing import Tracing

__all__ = [
    "MAX_STATS_INTERVAL_MS",
    "MIN_STATS_INTERVAL_MS",
    "EventFeed",
    "Inbox",
    "SubscriptionRoot",
]

MIN_STATS_INTERVAL_MS = 100
"""Shortest ``intervalMs`` of ``stats`` (``/stats`` is built to be polled at 10/s)."""
MAX_STATS_INTERVAL_MS = 3_600_000
"""Longest ``intervalMs`` of ``stats``."""


class Inbox:
    """A ``messages`` subscription's deliveries: the actor puts, the subscription takes.

    It is the consumer's `DeliverySink`: called synchronously by the queue's
    actor, it only appends. Credit bounds its length by ``prefetch``. A
    message whose stored body can't be sent (`transports.decoding.deliverable`)
    is queued as its bare id, for the subscription to fail.
    """

    def __init__(self, tracing: Tracing | None = None) -> None:
        self._tracing = tracing
        # ``None`` wakes `next` to raise `error` (the subscription was ended).
        self.views: asyncio.Queue[MessageView | int | None] = asyncio.Queue()
        self.error: Exception | None = None

    def __call__(self, queue: str, entries: list[Entry]) -> None:
        if self.error is not None:
            return  # ended: removing the consumer requeues them
        # Snapshot now: the entry is the broker's live record (attempt and
        # lease change if it is later requeued and redelivered).
        for entry in entries:
            if entry.content is not None and not deliverable(entry.content):
                self.views.put_nowait(entry.id)
            else:
                self.views.put_nowait(entry.view(queue, "processing"))
        if self._tracing is not None:
            self._tracing.delivered(
                queue, ((e.id, e.headers, e.attempt) for e in entries), "graphql"
            )

    def end(self, error: Exception) -> None:
        """End the subscription: `next` raises ``error``; undelivered views are dropped.

        Called synchronously, when the user loses the right (``revoked``) or
        by the queue's actor when the queue is deleted (`QueueNotFound`); the
        first reason wins.
        """
        if self.error is None:
            self.error = error
        self.views.put_nowait(None)

    async def next(self) -> MessageView | int:
        """Wait for the next delivery (a bare id: undeliverable).

        Raises:
            Exception: the error given to `end`, once it was called.
        """
        views = self.views
        while True:
            if self.error is not None:
                raise self.error
            view = await views.get()
            if view is not None and self.error is None:
                return view


class EventFeed:
    """One ``queueEvents`` subscriber: a bounded buffer of the events it may see.

    Args:
        user: whose permissions filter the events (queues it can see).
        queue: only this queue's events, or every visible queue's when ``None``.
        size: events buffered before the oldest are dropped.
    """

    def __init__(self, user: User, queue: str | None, size: int) -> None:
        self.user = user
        self.queue = queue
        self.buffer: deque[QueueEventStruct] = deque(maxlen=size)
        self.missed = 0
        self.ready = asyncio.Event()
        self.error: ApiError | None = None
        self._visible: dict[str, bool] = {}

    def may_hold(self, user: User) -> bool:
        """Filter by ``user``'s rights from now on; whether it may still watch its queue."""
        self.user = user
        self._visible.clear()
        return self.queue is None or visible(user, self.queue)

    def revoke(self, error: ApiError) -> None:
        """End the feed: `next` raises ``error``."""
        self.error = error
        self.ready.set()

    def __call__(self, event: QueueEventStruct) -> None:
        """Take an event from the broker (synchronously, from an actor): never blocks."""
        name = event.queue
        if self.queue is not None:
            if name != self.queue:
                return
        else:
            seen = self._visible.get(name)
            if seen is None:
                if len(self._visible) > 10_000:
                    self._visible.clear()
                seen = self._visible[name] = visible(self.user, name)
            if not seen:
                return
        buffer = self.buffer
        if len(buffer) == buffer.maxlen:
            self.missed += 1  # the append below drops the oldest
        buffer.append(event)
        self.ready.set()

    async def next(self) -> EventDelivery:
        """Wait for the next event, with the count of those dropped before it.

        Raises:
            ApiError: ``revoked``, once `revoke` was called.
        """
        while not self.buffer or self.error is not None:
            if self.error is not None:
                raise self.error
            self.ready.clear()
            await self.ready.wait()
        event = self.buffer.popleft()
        missed, self.missed = self.missed, 0
        return EventDelivery(
            type=event.type,
            queue=event.queue,
            at=event.at,
            message_id=event.message_id,
            detail=event.detail,
            missed=missed,
        )


@strawberry.type(
    name="Subscription",
    description="Consume queues and watch the broker live (over WebSocket).",
)
class SubscriptionRoot(ResultsSubscription):
    """The GraphQL ``Subscription`` type (named apart from the WebSocket and client classes)."""

    @strawberry.subscription(
        graphql_type=Message,
        description=(
            "Consume a queue (`consume`): each event is a delivered message, held until you "
            "`ack` or `nack` it; at most `prefetch` are held at once. Ending the subscription "
            "requeues the messages you still hold."
        ),
    )
    async def messages(
        self, info: strawberry.Info, queue: str, prefetch: int = 10
    ) -> AsyncGenerator[MessageView, None]:
        context = context_of(info)
        require(context.caller(), Action.CONSUME, queue)
        context.spend(context.ctx.limits.consume)
        check_prefetch(context.ctx.settings, prefetch)
        broker = context.ctx.broker
        inbox = Inbox(context.ctx.tracing)
        held = Held(
            f"consume on queue {queue!r}",
            lambda user: allowed(user, Action.CONSUME, queue),
            inbox.end,
        )
        with context.subscription_slot(held):
            # Shielded: if the subscription is cancelled while registering, the
            # registration still lands, and the finally clause undoes it.
            registration = asyncio.ensure_future(
                broker.subscribe(
                    queue,
                    prefetch,
                    inbox,
                    lambda: inbox.end(QueueNotFound(queue)),
                    label=f"graphql {context.caller().username}",
                )
            )
            try:
                await asyncio.shield(registration)
                while True:
                    view = await inbox.next()
                    if isinstance(view, int):
                        # One poison message must not end the subscription.
                        await fail_undeliverable(broker, queue, [view])
                        continue
                    yield view
            finally:
                consumer_id = await _registered(registration)
                if consumer_id is not None:
                    await broker.unsubscribe(queue, consumer_id)

    @strawberry.subscription(
        graphql_type=QueueEvent,
        description=(
            "Events of one queue, or of every queue you can see: published, delivered, acked, "
            "nacked, failed, queue created/deleted... A slow reader misses events (`missed`) "
            "rather than slowing the broker."
        ),
    )
    async def queue_events(
        self, info: strawberry.Info, queue: str | None = None
    ) -> AsyncGenerator[EventDelivery, None]:
        context = context_of(info)
        user = context.caller()
        if queue is not None:
            require_visible(user, queue)
        context.spend(context.ctx.limits.default)
        broker = context.ctx.broker
        feed = EventFeed(user, queue, context.ctx.settings.ws_send_buffer_messages)
        held = Held(f"sight of queue {queue!r}", feed.may_hold, feed.revoke)
        with context.subscription_slot(held):
            broker.add_listener(feed)
            try:
                while True:
                    yield await feed.next()
            finally:
                broker.remove_listener(feed)

    @strawberry.subscription(
        graphql_type=Stats,
        description=(
            "The `stats` snapshot now, then every `intervalMs` milliseconds (100 or more), "
            "for live dashboards."
        ),
    )
    async def stats(
        self, info: strawberry.Info, interval_ms: int = 1000
    ) -> AsyncGenerator[StatsResponse, None]:
        context = context_of(info)
        require_scope(context.caller(), STATS_READ)
        if not MIN_STATS_INTERVAL_MS <= interval_ms <= MAX_STATS_INTERVAL_MS:
            raise ApiError(
                422,
                "invalid",
                f"intervalMs must be between {MIN_STATS_INTERVAL_MS} and {MAX_STATS_INTERVAL_MS}",
            )
        context.spend(context.ctx.limits.admin)
        ended: list[ApiError] = []
        wakeup = asyncio.Event()

        def revoke(error: ApiError) -> None:
            ended.append(error)
            wakeup.set()

        with context.subscription_slot(Held("stats", lambda _: True, revoke)):
            while True:
                yield build_stats(context.ctx, user=context.caller())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval_ms / 1000):
                        await wakeup.wait()
                if ended:
                    raise ended[0]


async def _registered(registration: asyncio.Future[int]) -> int | None:
    """The consumer id once registration is over, or ``None`` if it failed."""
    try:
        return await registration
    except (Exception, asyncio.CancelledError):
        return None

"""The push consumers of one ``/ws`` connection and the delivery tags that name what they hold.

Sans I/O, like websockets' ``protocol.py``: no socket, no asyncio, no clock.
`Consumers` numbers a connection's subscriptions and its delivery tags, and
keeps for each tag the delivery it settles. A tag is good for one settle, and
only while the delivery it names is still the one leased to its consumer
(DESIGN.md, "Trust": a late ack of a message requeued meanwhile must not
settle its next delivery). The tags of a revoked subscription are kept apart,
so a late ack is answered ``revoked`` rather than ``unknown_tag``.

`transports.ws.protocol.WsProtocol` allocates tags as it encodes deliveries
and answers what `Consumers` decides; `transports.ws.session.Session` does the
awaiting (subscribe, settle, unsubscribe) with the broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from broker_core.errors import QueueNotFound

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from broker_core.messages import Entry

__all__ = ["REVOKED_TAGS", "ConsumerOwner", "Consumers", "WsConsumer"]

REVOKED_TAGS = 10_000
"""Tags of revoked subscriptions remembered, to refuse them as ``revoked`` (oldest forgotten)."""


class ConsumerOwner(Protocol):
    """Whom a `WsConsumer` reports to: the session of its connection."""

    def deliver(self, consumer: WsConsumer, entries: list[Entry]) -> None:
        """Take the deliveries the queue's actor made to ``consumer``."""

    def end_subscription(self, consumer: WsConsumer, reason: str) -> None:
        """End ``consumer`` because the server did (its queue was deleted)."""

    def internal_error(self, exc: BaseException) -> None:
        """Report an unexpected exception (the session closes with 1011)."""


class WsConsumer:
    """One subscription of a connection: the `DeliverySink` its queue's actor delivers to.

    ``held`` maps the tags of unsettled deliveries to the entry and the
    attempt they delivered, so a late ack of an older delivery of the same
    message (requeued meanwhile) is refused instead of settling the new one.
    """

    __slots__ = ("consumer_id", "early", "ended", "held", "id", "owner", "prefetch", "queue")

    def __init__(self, owner: ConsumerOwner, id: int, queue: str, prefetch: int) -> None:
        self.owner = owner
        self.id = id
        self.queue = queue
        self.prefetch = prefetch
        self.consumer_id: int | None = None
        self.held: dict[int, tuple[Entry, int]] = {}
        # Deliveries made before ``subscribed`` was sent wait here, so the
        # client always learns the subscription before its first delivery.
        self.early: list[bytes] | None = []
        # Why the server ended it; from then on deliveries are dropped (and
        # requeued when the consumer is removed).
        self.ended: str | None = None

    def __repr__(self) -> str:
        return f"<WsConsumer {self.id} {self.queue!r} prefetch={self.prefetch}>"

    def queue_deleted(self) -> None:
        """End the subscription because its queue was deleted (the actor's ``on_close``)."""
        try:
            self.owner.end_subscription(self, "queue deleted")
        except Exception as exc:
            self.owner.internal_error(exc)

    def __call__(self, queue: str, entries: list[Entry]) -> None:
        """Take deliveries from the queue's actor (synchronously, in its turn; never raises)."""
        try:
            self.owner.deliver(self, entries)
        except Exception as exc:
            # Raising here would break the actor's turn for every consumer of the queue.
            self.owner.internal_error(exc)


class Consumers:
    """The live subscriptions of a connection, its delivery tags and its revoked tags.

    ``live`` maps subscription ids to consumers; ``tags`` maps each unsettled
    tag to its consumer (whose ``held`` says what it settles); ``revoked``
    maps the tags of revoked subscriptions to their queue. `WsProtocol.deliver`
    allocates tags inline from ``next_tag`` (the per-message path).

    Args:
        leases: the leased messages of a queue by id (`Broker.leases`), read
            to forget tags whose delivery ended without this connection;
            raises `QueueNotFound` for a deleted queue.
        revoked_limit: how many revoked tags to remember.
    """

    def __init__(
        self, leases: Callable[[str], Mapping[int, Entry]], revoked_limit: int = REVOKED_TAGS
    ) -> None:
        self.live: dict[int, WsConsumer] = {}
        self.tags: dict[int, WsConsumer] = {}
        self.revoked: dict[int, str] = {}
        self.next_tag = 0
        self._next_id = 0
        self._leases = leases
        self._revoked_limit = revoked_limit

    def __len__(self) -> int:
        return len(self.live)

    def add(self, owner: ConsumerOwner, queue: str, prefetch: int) -> WsConsumer:
        """A new live subscription with the next id (its consumer id comes once subscribed)."""
        self._next_id += 1
        consumer = WsConsumer(owner, self._next_id, queue, prefetch)
        self.live[consumer.id] = consumer
        return consumer

    def is_live(self, consumer: WsConsumer) -> bool:
        """Whether ``consumer`` is still live (not removed, ended or revoked meanwhile)."""
        return consumer.id in self.live

    def discard(self, consumer: WsConsumer) -> None:
        """Forget a subscription whose subscribe failed or came too late (it holds nothing)."""
        self.live.pop(consumer.id, None)

    def remove(self, id: int) -> WsConsumer | None:
        """Remove subscription ``id`` and forget its tags; ``None`` if there is none."""
        consumer = self.live.pop(id, None)
        if consumer is not None:
            self.forget(consumer)
        return consumer

    def forget(self, consumer: WsConsumer) -> None:
        """Forget every tag ``consumer`` holds: none can settle anything any more."""
        tags = self.tags
        for tag in consumer.held:
            tags.pop(tag, None)
        consumer.held.clear()

    def revoke(self, consumer: WsConsumer) -> None:
        """End ``consumer`` as revoked: its tags move to ``revoked`` (oldest past the limit go)."""
        del self.live[consumer.id]
        consumer.ended = "revoked"
        revoked = self.revoked
        tags = self.tags
        for tag in consumer.held:
            tags.pop(tag, None)
            revoked[tag] = consumer.queue
        consumer.held.clear()
        while len(revoked) > self._revoked_limit:
            del revoked[next(iter(revoked))]

    def take_all(self) -> list[WsConsumer]:
        """Every live subscription, forgetting them and all tags (the connection is closing)."""
        consumers = list(self.live.values())
        self.live.clear()
        self.tags.clear()
        return consumers

    def crowded(self, consumer: WsConsumer) -> bool:
        """Whether ``consumer`` holds so many tags that some must belong to ended deliveries."""
        return len(consumer.held) > 2 * consumer.prefetch + 64

    def prune(self, consumer: WsConsumer) -> None:
        """Forget tags whose delivery ended without this connection (lease expired, REST ack).

        Call it inside the queue's actor's turn (from a delivery), so that its
        leases read consistently.
        """
        try:
            processing = self._leases(consumer.queue)
        except QueueNotFound:
            return
        cid = consumer.consumer_id
        held = consumer.held
        stale = [
            tag
            for tag, (entry, attempt) in held.items()
            if entry.attempt != attempt
            or (cid is not None and entry.consumer != cid)
            or processing.get(entry.id) is not entry
        ]
        tags = self.tags
        for tag in stale:
            del held[tag]
            tags.pop(tag, None)

    def claim(
        self, tags: list[int], keep: bool
    ) -> tuple[dict[WsConsumer, dict[int, int]], list[int]]:
        """Group ``tags`` by consumer as ``{message id: tag}``; return them and the bad tags.

        Without ``keep`` the tags are forgotten (ack, nack): settled or not,
        they can't be used again. With it (touch) they stay.
        """
        groups: dict[WsConsumer, dict[int, int]] = {}
        bad: list[int] = []
        by_tag = self.tags
        for tag in tags:
            consumer = by_tag.get(tag) if keep else by_tag.pop(tag, None)
            if consumer is None:
                bad.append(tag)
                continue
            entry, attempt = consumer.held[tag] if keep else consumer.held.pop(tag)
            if entry.attempt != attempt or entry.consumer != consumer.consumer_id:
                # Requeued since (its lease expired): this tag no longer names it.
                consumer.held.pop(tag, None)
                by_tag.pop(tag, None)
                bad.append(tag)
                continue
            groups.setdefault(consumer, {})[entry.id] = tag
        return groups, bad

    def split_revoked(
        self, tags: list[int], forget: bool
    ) -> tuple[list[int], list[str], list[int]]:
        """Split ``tags`` into the revoked ones, their queues (sorted) and the others.

        ``forget`` drops the revoked tags (ack, nack: answered once). Returns
        ``(refused, queues, rest)``; ``rest`` is ``tags`` itself when none was revoked.
        """
        revoked = self.revoked
        refused = [tag for tag in tags if tag in revoked]
        if not refused:
            return refused, [], tags
        queues = sorted({revoked[tag] for tag in refused})
        if forget:
            for tag in refused:
                del revoked[tag]
        refused_set = set(refused)
        return refused, queues, [tag for tag in tags if tag not in refused_set]

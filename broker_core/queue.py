"""The pure state of one queue: its pending order, leases, consumers and their credit.

`QueueState` is synchronous code without I/O or clock: every method takes
``now`` (Unix seconds) and records its effects in outboxes that the owner
drains by swap-and-return: `take_deliveries`, `take_ops`, `take_dead_letters`
and `take_loads`. Its `QueueActor` calls it from one asyncio task.

The waiting messages are a `pending.PendingOrder` (priorities, delays, TTLs,
cold bodies); this class holds the rules: publish and room limits,
deduplication, delivery to consumers and pulls, leases, settlement, dead
letters.

Ordering: messages of one priority are delivered in publish order; a
requeued message goes back to the head of its priority, so redeliveries may
overtake, unless the queue's retry policy (or the nack) makes it wait: then
it goes to the tail of its priority when due. Higher priorities always go first.

`QueueState` is the single-node algorithm: the actor owns the pending order.
On storage shared by several nodes, `claims.SharedQueueState` overrides
where messages go (storage, not memory) and how they are claimed.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from .consumer import Consumer
from .dedup import DedupWindow
from .errors import InvalidTransition, MessageNotFound, QueueFull
from .group_views import dispatch_single
from .groups import GroupedOrder
from .journal import (
    AckOp,
    DeadLetter,
    DeliverOp,
    Drop,
    Fail,
    Insert,
    Op,
    PurgeQueue,
    Restore,
)
from .messages import Entry
from .pending import created_of, item_id
from .retry_control import MessageControl, give_up_reason, pause_deadline
from .types import Overflow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from .messages import PublishRequest, QueueOptions
    from .pending import BodyBudget, Item

__all__ = [
    "Published",
    "QueueState",
    "SettleOutcome",
    "give_up_reason",
]


class Published(NamedTuple):
    """The outcome of one publish: the message id and whether it was a deduplicated repeat."""

    id: int
    created_at: float
    duplicate: bool


class SettleOutcome(NamedTuple):
    """Ids settled by an ack/nack and, for the others, the error that prevented it."""

    settled: list[int]
    errors: dict[int, Exception]


class QueueState(MessageControl):
    """Pending order, leases and consumers of one queue, and the rules that move messages.

    Back-off, pause, cancel and reschedule come from `MessageControl`.

    Args:
        name: the queue's name.
        options: its options (`QueueOptions`); replace with `set_options`.
        budget: the body budget shared with the other queues.
        dedup_window_s: how long a ``dedup_id`` is remembered.
        processed: messages processed so far (as storage counted them).
        failed: messages failed so far.
    """

    def __init__(
        self,
        name: str,
        options: QueueOptions,
        *,
        budget: BodyBudget,
        dedup_window_s: float = 300.0,
        processed: int = 0,
        failed: int = 0,
    ) -> None:
        self.name = name
        self.options = options
        self.paused_until = pause_deadline(options)
        self.budget = budget
        self.dedup_window_s = dedup_window_s
        self.pending: GroupedOrder = GroupedOrder(budget, options.group_concurrency)
        self.processing: dict[int, Entry] = {}
        self._leases: list[tuple[float, int]] = []
        self.consumers: dict[int, Consumer] = {}
        self._ready: deque[int] = deque()
        self._dedup = DedupWindow(dedup_window_s)
        self.processed = processed
        self.failed = failed
        self.published_total = 0
        self.delivered_total = 0
        self.acked_total = 0
        self.nacked_total = 0
        self._deliveries: list[tuple[int, Entry]] = []
        self._ops: list[Op] = []
        self._dead: list[tuple[str, Item]] = []

    # -- outboxes ---------------------------------------------------------------

    def take_deliveries(self) -> list[tuple[int, Entry]]:
        """Return and clear the ``(consumer id, entry)`` pairs to push."""
        out, self._deliveries = self._deliveries, []
        return out

    def take_ops(self) -> list[Op]:
        """Return and clear the journal operations to write."""
        out, self._ops = self._ops, []
        return out

    def journal_after_last_insert(self, make: Callable[[Insert], Op]) -> None:
        """Journal ``make(insert)`` of this turn's last publish, in the same write."""
        self._ops.append(make(next(op for op in reversed(self._ops) if type(op) is Insert)))

    def take_dead_letters(self) -> list[tuple[str, Item]]:
        """Return and clear the ``(target queue, message)`` pairs to hand to other queues."""
        out, self._dead = self._dead, []
        return out

    def take_loads(self) -> list[int]:
        """Return and clear the ids whose bodies must be read from storage (then `hydrate`)."""
        return self.pending.take_loads()

    # -- counts -----------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        """Messages ready for delivery here (cold ones included)."""
        return self.pending.count

    @property
    def pending_bytes(self) -> int:
        """Bytes of the ready and delayed messages here."""
        return self.pending.bytes

    @property
    def delayed_count(self) -> int:
        """Messages waiting for their ``deliver_at``."""
        return self.pending.delayed_count

    def held(self) -> tuple[int, int]:
        """Messages and bytes that count toward ``max_length`` and ``max_bytes``."""
        return self.pending.count + self.pending.delayed_count, self.pending.bytes

    def set_options(self, options: QueueOptions) -> None:
        """Apply new options; they govern the next publish, lease and nack."""
        self.options = options
        self.paused_until = pause_deadline(options)
        self.pending.set_concurrency(options.group_concurrency)

    # -- publish ----------------------------------------------------------------

    def publish(
        self,
        requests: Sequence[PublishRequest],
        now: float,
        next_id: Callable[[], int],
        origin: str = "",  # who published them over what, for their history
    ) -> list[Published]:
        """Enqueue ``requests`` atomically: all, or none if the queue is full.

        Raises:
            QueueFull: with ``overflow=reject_publish``, when the new messages
                would pass ``max_length`` or ``max_bytes``.
        """
        dedup = self._dedup
        dedup.prune(now)
        count = size = 0
        batch_dedup: set[str] = set()
        for request in requests:
            if request.dedup_id is not None:
                if request.dedup_id in dedup or request.dedup_id in batch_dedup:
                    continue
                batch_dedup.add(request.dedup_id)
            count += 1
            size += len(request.content)
        limit = self.check_room(count, size)
        if limit is not None:
            self._make_room(count, size, limit, now)
        results: list[Published] = []
        for request in requests:
            dedup_id = request.dedup_id
            if dedup_id is not None:
                # A repeat within this batch finds the first one here too.
                seen = dedup.get(dedup_id)
                if seen is not None:
                    results.append(Published(seen[0], seen[1], True))
                    continue
            entry = self._new_entry(request, now, next_id())
            published = Published(entry.id, now, False)
            if dedup_id is not None:
                dedup.remember(dedup_id, entry.id, now)
            self._ops.append(Insert(self.name, entry, origin))
            self.published_total += 1
            self._place(entry, now)
            results.append(published)
        return results

    def _new_entry(self, request: PublishRequest, now: float, id: int) -> Entry:
        content = bytes(request.content)
        deliver_at = 0.0
        if request.deliver_at is not None:
            deliver_at = request.deliver_at.timestamp()
        elif request.delay_ms:
            deliver_at = now + request.delay_ms / 1000
        ttl_ms = request.ttl_ms or self.options.message_ttl_ms
        if request.ttl_ms and self.options.message_ttl_ms:
            ttl_ms = min(request.ttl_ms, self.options.message_ttl_ms)
        expires_at = max(now, deliver_at) + ttl_ms / 1000 if ttl_ms else 0.0
        return Entry(
            id,
            content=content,
            size=len(content),
            created_at=now,
            priority=request.priority,
            headers=request.headers,
            deliver_at=deliver_at,
            expires_at=expires_at,
            dedup_id=request.dedup_id,
            group=request.group,
        )

    def _place(self, entry: Entry, now: float) -> None:
        """Put a message that is new here (published, adopted) in the pending order."""
        if entry.deliver_at > now:
            self.pending.delay(entry)
        else:
            entry.deliver_at = 0.0
            self.pending.append(entry)

    def check_room(self, count: int, size: int) -> str | None:
        """Whether ``count`` more messages of ``size`` bytes fit.

        Returns ``None`` when they fit as things are, else the limit they
        pass, which ``drop_head`` makes room under by dropping the oldest.

        Raises:
            QueueFull: they can't fit: ``reject_publish`` and a limit passed, or
                more than any dropping can make room for.
        """
        options = self.options
        max_length, max_bytes = options.max_length, options.max_bytes
        if max_length is None and max_bytes is None:
            return None
        limit = self._over(count, size)
        if limit is None:
            return None
        if options.overflow is Overflow.REJECT_PUBLISH or (
            max_length is not None and count > max_length
        ):
            raise QueueFull(self.name, limit)
        if max_bytes is not None and size > max_bytes:
            raise QueueFull(self.name, f"max_bytes {max_bytes}")
        return limit

    def _over(self, count: int, size: int) -> str | None:
        """The limit that ``count`` more messages of ``size`` bytes would pass, or ``None``."""
        options = self.options
        held, held_bytes = self.held()
        if options.max_length is not None and held + count > options.max_length:
            return f"max_length {options.max_length}"
        if options.max_bytes is not None and held_bytes + size > options.max_bytes:
            return f"max_bytes {options.max_bytes}"
        return None

    def _make_room(self, count: int, size: int, limit: str, now: float) -> None:
        """``drop_head``: drop the oldest messages until ``count`` more of ``size`` bytes fit."""
        while self._over(count, size) is not None:
            item = self.pending.pop_oldest()
            if item is None:
                raise QueueFull(self.name, limit)
            self._dead_letter(item, "maxlen", now, drop=True)

    # -- replay and adoption ----------------------------------------------------

    def restore(
        self,
        cold: Iterable[int],
        delayed: Iterable[Entry],
        dedup: Iterable[tuple[str, int, float]] = (),
        grouped: Iterable[int] = (),
        group_names: Iterable[str] = (),
    ) -> None:
        """Rebuild pending order and the dedup window from storage at start (no journal ops).

        ``cold`` and ``grouped`` are packed items (`pack_cold`), in id order;
        ``group_names`` the group of each of ``grouped``.
        """
        for dedup_id, id, created_at in sorted(dedup, key=lambda row: row[2]):
            self._dedup.remember(dedup_id, id, created_at)
        pending = self.pending
        for item in cold:
            pending.append_cold(item)
        pending.restore_grouped(zip(grouped, group_names, strict=True))
        for entry in delayed:
            pending.delay(entry)

    def remember_dedup(self, dedup_id: str, id: int, created_at: float, now: float) -> None:
        """Another node published ``id`` with ``dedup_id``: a repeat here is one too."""
        if dedup_id in self._dedup or created_at + self.dedup_window_s <= now:
            return
        self._dedup.remember(dedup_id, id, created_at)

    def adopt(self, item: Item, now: float) -> None:
        """Take a message dead-lettered (or restored) from another queue; storage moved it."""
        if isinstance(item, int):
            self.pending.append_cold(item)
            return
        item.consumer = None
        item.lease_deadline = 0.0
        self._place(item, now)

    def take_for_retry(
        self, id: int, failed: bool, target: str, by: str | None = None, created: float = 0.0
    ) -> None:
        """Let a failed or dead-lettered message of this queue go to ``target`` (a retry).

        Args:
            id: the message.
            failed: it is failed here (else pending here, dead-lettered from ``target``).
            target: the queue it is restored to (which then adopts it).
            by: who retried it, for its history; ``created``: its ``created_at``.

        Raises:
            InvalidTransition: it was pending and no longer is.
        """
        if failed:
            self.failed -= 1
        elif self.pending.remove(id) is None:
            self._not_pending_for_retry(id)
        self._ops.append(Restore(id, target, by, created))

    def _not_pending_for_retry(self, id: int) -> None:
        raise InvalidTransition(id, "retry", "no longer pending")

    def forget_failed(self, count: int) -> None:
        """``count`` failed messages were pruned from storage."""
        self.failed = max(0, self.failed - count)

    # -- delivery ---------------------------------------------------------------

    def add_consumer(
        self, consumer_id: int, prefetch: int, *, label: str = "", now: float = 0.0
    ) -> None:
        """Register a push consumer with ``prefetch`` credit; call `dispatch` next.

        ``label`` says who it is (transport, user, address) for operators.
        """
        assert consumer_id not in self.consumers, "consumer ids are unique"
        self.consumers[consumer_id] = Consumer(consumer_id, prefetch, label, now)
        self._ready.append(consumer_id)

    def remove_consumer(self, consumer_id: int, now: float) -> int:
        """Forget a consumer and give back what it held (requeued, redelivered); return how many."""
        consumer = self.consumers.pop(consumer_id, None)
        if consumer is None:
            return 0
        if consumer_id in self._ready:
            self._ready.remove(consumer_id)
        held = sorted(consumer.held, reverse=True)
        for id in held:
            entry = self.processing.pop(id)
            self.pending.release(entry)
            # Counts against max_attempts: a message that kills its consumer
            # every time is dead-lettered instead of looping for ever.
            self._give_back(entry, True, "consumer gone", now, "gone")
        return len(held)

    def dispatch(self, now: float) -> None:
        """Hand ready messages to consumers with credit, round robin."""
        ready = self._ready
        consumers = self.consumers
        pending = self.pending
        if self.paused_until > now:
            return
        if self.options.single_active_consumer:
            dispatch_single(self, now)
            return
        while ready and pending.count:
            consumer_id = ready[0]
            consumer = consumers[consumer_id]
            entry = self._next_ready(now)
            if entry is None:
                return
            ready.popleft()
            self._lease(entry, consumer_id, self.options.lease, now)
            consumer.held.add(entry.id)
            self._deliveries.append((consumer_id, entry))
            if consumer.credit > 0:
                ready.append(consumer_id)

    def pull(self, max_count: int, lease_s: float | None, now: float) -> list[Entry]:
        """Lease up to ``max_count`` ready messages to a pull consumer (REST long poll)."""
        lease = lease_s if lease_s is not None else self.options.lease
        out: list[Entry] = []
        pending = self.pending
        if self.paused_until > now:
            return out
        while len(out) < max_count and pending.count:
            entry = self._next_ready(now)
            if entry is None:
                break
            self._lease(entry, None, lease, now)
            out.append(entry)
        return out

    def _next_ready(self, now: float) -> Entry | None:
        """Pop the next deliverable entry, expiring stale ones; ``None`` if empty or loading."""
        pop_next = self.pending.pop_next
        while (head := pop_next()) is not None:
            if head.expires_at and head.expires_at <= now:
                self.pending.release(head)
                self._dead_letter(head, "expired", now, drop=True)
                continue
            return head
        return None

    def _lease(self, entry: Entry, consumer_id: int | None, lease: float, now: float) -> None:
        entry.attempt += 1
        if entry.attempt > 1:
            entry.redelivered = True
        entry.consumer = consumer_id
        entry.delivered_at = now
        entry.lease_deadline = deadline = now + lease
        self.processing[entry.id] = entry
        heapq.heappush(self._leases, (deadline, entry.id))
        self.delivered_total += 1
        self._ops.append(
            DeliverOp(entry.id, entry.attempt, deadline, consumer_id, entry.created_at)
        )

    def hydrate(self, entries: Sequence[Entry], requested: Sequence[int]) -> None:
        """Put loaded bodies in place of the cold items ``requested`` (missing ones are gone).

        Call with the answer of the load that `take_loads` asked for, then `dispatch`.
        """
        self.pending.hydrate(entries, requested)

    def hydrate_failed(self) -> None:
        """The load asked for failed; the next `dispatch` asks again."""
        self.pending.load_failed()

    # -- settlement -------------------------------------------------------------

    def _take_leased(self, id: int, consumer_id: int | None, operation: str) -> Entry:
        entry = self.processing.get(id)
        if entry is None:
            raise InvalidTransition(id, operation, "not processing")
        if consumer_id is not None and entry.consumer != consumer_id:
            raise MessageNotFound(id)
        del self.processing[id]
        self.pending.release(entry)
        if entry.consumer is not None:
            holder = self.consumers.get(entry.consumer)
            if holder is not None:
                holder.held.discard(id)
                if holder.credit == 1:
                    self._ready.append(holder.id)
        return entry

    def ack(self, ids: Iterable[int], now: float, consumer_id: int | None = None) -> SettleOutcome:
        """Settle leased messages as processed.

        ``consumer_id`` restricts the ack to messages leased to that consumer
        (a WebSocket subscription); ``None`` accepts any holder (REST).
        """
        settled: list[int] = []
        errors: dict[int, Exception] = {}
        for id in ids:
            try:
                entry = self._take_leased(id, consumer_id, "ack")
            except (InvalidTransition, MessageNotFound) as exc:
                errors[id] = exc
                continue
            self.processed += 1
            self.acked_total += 1
            self._ops.append(AckOp(self.name, id, now, entry.group is not None, entry.created_at))
            settled.append(id)
        return SettleOutcome(settled, errors)

    def nack(
        self,
        ids: Iterable[int],
        now: float,
        *,
        requeue: bool = True,
        reason: str | None = None,
        consumer_id: int | None = None,
        delay_ms: int | None = None,
    ) -> SettleOutcome:
        """Give leased messages back: requeued (redelivered) or, without requeue, dead-lettered.

        A message that has used ``max_attempts`` deliveries is dead-lettered even
        when ``requeue`` is true. A requeue waits ``delay_ms`` if given, else
        what the queue's retry policy says.
        """
        settled: list[int] = []
        errors: dict[int, Exception] = {}
        for id in ids:
            try:
                entry = self._take_leased(id, consumer_id, "nack")
            except (InvalidTransition, MessageNotFound) as exc:
                errors[id] = exc
                continue
            self.nacked_total += 1
            if reason is not None:
                entry.last_error = reason
            self._give_back(entry, requeue, reason or "rejected", now, "nack", delay_ms)
            settled.append(id)
        return SettleOutcome(settled, errors)

    def touch(self, id: int, lease_s: float, now: float, consumer_id: int | None = None) -> float:
        """Extend a held lease to ``now + lease_s``; return the new deadline."""
        entry = self.processing.get(id)
        if entry is None:
            raise InvalidTransition(id, "touch", "not processing")
        if consumer_id is not None and entry.consumer != consumer_id:
            raise MessageNotFound(id)
        entry.lease_deadline = deadline = now + lease_s
        heapq.heappush(self._leases, (deadline, id))
        return deadline

    def touch_if_held(self, id: int, deadline: float, now: float) -> None:
        """Another node extended a lease this node holds to ``deadline`` (if it still holds it)."""
        if id in self.processing and deadline > now:
            self.touch(id, deadline - now, now)

    def _dead_letter(self, item: Item, reason: str, now: float, *, drop: bool = False) -> None:
        """Send a message that left the queue to the dead-letter queue, or end it.

        Without a dead-letter queue, ``drop`` (expired, pushed out by
        ``drop_head``) deletes it; otherwise it is failed. ``reason`` may be a
        client's text, so it never decides between the two.
        """
        target = self.options.dead_letter_queue
        id = item_id(item)
        if target is not None and target != self.name:
            if isinstance(item, Entry):
                item.attempt = 0
                item.redelivered = False
                item.dead_lettered_from = self.name
                item.last_error = reason if item.last_error is None else item.last_error
                item.dedup_id = None
                # Its TTL is spent (or no longer applies): as RabbitMQ does, a
                # dead-lettered message doesn't expire again in the target.
                item.expires_at = 0.0
            grouped = isinstance(item, Entry) and item.group is not None
            self._ops.append(DeadLetter(id, self.name, target, reason, grouped, created_of(item)))
            self._hand_over(target, item)
        elif drop:
            self._ops.append(Drop(id, reason, None, created_of(item)))
        else:
            self.failed += 1
            grouped = isinstance(item, Entry) and item.group is not None
            self._ops.append(Fail(self.name, id, reason, now, grouped, created_of(item)))

    def _hand_over(self, target: str, item: Item) -> None:
        """A dead-lettered message goes to the ``target`` queue's actor (storage moved it)."""
        self._dead.append((target, item))

    # -- time -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Apply every deadline due by ``now``: leases, delays, TTLs, dedup window."""
        leases = self._leases
        while leases and leases[0][0] <= now:
            deadline, id = heapq.heappop(leases)
            entry = self.processing.get(id)
            if entry is not None and entry.lease_deadline == deadline:
                self._take_leased(id, None, "expire")
                self._give_back(entry, True, "lease expired", now, "expired")
        if 0 < self.paused_until <= now:
            self.paused_until = 0.0  # paused until an instant: resumed by itself
        pending = self.pending
        pending.promote_due(now)
        while (expired := pending.pop_expired(now)) is not None:
            self._dead_letter(expired, "expired", now, drop=True)
        self._dedup.prune(now)

    def next_deadline(self) -> float | None:
        """The earliest instant at which `tick` has work, or ``None``."""
        candidates = []
        if self._leases:
            candidates.append(self._leases[0][0])
        pending = self.pending.next_deadline()
        if pending is not None:
            candidates.append(pending)
        dedup = self._dedup.next_deadline()
        if dedup is not None:
            candidates.append(dedup)
        if 0 < self.paused_until < math.inf:
            candidates.append(self.paused_until)
        return min(candidates) if candidates else None

    # -- bulk -------------------------------------------------------------------

    def purge(self) -> int:
        """Delete every pending and delayed message; leased ones stay. Return how many."""
        count = self.pending.clear()
        self._ops.append(PurgeQueue(self.name))
        return count

    def withdraw(self, queue: str, entries: Sequence[Entry]) -> list[int]:
        """Take out messages whose publish failed to commit: storage will never hold them.

        ``queue`` is where they were published; ``entries`` as their `Insert`
        ops held them. Pending, delayed or leased (its batch may have failed
        after it was pushed), a message goes without a journal op, never to
        be delivered again (a later ack is refused); its ``dedup_id`` is
        forgotten, so a retry is a new publish. Returns the ids found here.
        """
        ids = {entry.id for entry in entries}
        if queue == self.name:
            self._dedup.forget(ids)
            self.published_total -= len(ids)
            self._unpublished(entries)
        found = self.pending.withdraw(ids)
        for id in ids & self.processing.keys():
            self._take_leased(id, None, "withdraw")
            found.append(id)
        return found

    def _unpublished(self, entries: Sequence[Entry]) -> None:
        """Publishes to this queue were withdrawn (shared mode corrects its stored counts)."""

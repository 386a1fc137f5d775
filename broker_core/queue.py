"""The pure state of one queue: pending order, leases, consumers and their credit.

`QueueState` is synchronous code without I/O or clock: every method takes
``now`` (Unix seconds) and records its effects in outboxes that the owner
drains by swap-and-return: `take_deliveries`, `take_ops`, `take_dead_letters`
and `take_loads`. Its `QueueActor` calls it from one asyncio task.

Memory grows with work in flight, not with the backlog: a pending message is
either an `Entry` with its body, or, once the shared `BodyBudget` is spent, a
*cold* item, one int packing ``(id, priority, size)``, whose body stays in
storage until it nears the head of the queue and is loaded in a batch
(`take_loads` then `hydrate`).

Ordering: messages of one priority are delivered in publish order; a
requeued message goes back to the head of its priority, so redeliveries may
overtake. Higher priorities always go first.

In *shared* mode (several nodes on one database, `journal.SharedStorage`)
the database owns the pending order: a publish only writes its `Insert`, a
requeue or dead letter only writes its op, and ``pending`` holds just the
messages this node *claimed* for its consumers' credit. `balance` asks for
claims (`take_claims`, answered by `claimed`) while messages may be ready
(`wake`), and releases claimed messages no consumer here can take.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from .errors import InvalidTransition, MessageNotFound, QueueFull
from .journal import (
    AckOp,
    DeadLetter,
    DeliverOp,
    Drop,
    Fail,
    Insert,
    Op,
    PurgeQueue,
    Release,
    Requeue,
    Trim,
)
from .messages import Entry
from .types import Overflow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from .messages import PublishRequest, QueueOptions

__all__ = [
    "LOAD_BATCH",
    "PRIORITIES",
    "BodyBudget",
    "Consumer",
    "Published",
    "QueueState",
    "SettleOutcome",
    "give_back_op",
    "give_up_reason",
    "pack_cold",
    "unpack_cold",
]

PRIORITIES = 10
LOAD_BATCH = 256
"""How many cold messages one storage read brings back."""
_MAX_CLAIM = 1000
"""Most messages one claim from shared storage leases (shared mode)."""

Item = Entry | int


def pack_cold(id: int, priority: int, size: int) -> int:
    """Pack a cold message's id, priority and size into one int (36 bytes in memory)."""
    return (id << 36) | (priority << 32) | size


def unpack_cold(item: int) -> tuple[int, int, int]:
    """Return ``(id, priority, size)`` of a cold item."""
    return item >> 36, (item >> 32) & 0xF, item & 0xFFFFFFFF


def _item_id(item: Item) -> int:
    return item >> 36 if isinstance(item, int) else item.id


def _item_size(item: Item) -> int:
    return item & 0xFFFFFFFF if isinstance(item, int) else item.size


def _needs_load(item: Item) -> bool:
    return isinstance(item, int) or item.content is None


def give_up_reason(options: QueueOptions, attempt: int, requeue: bool, reason: str) -> str | None:
    """Why a message given back after ``attempt`` deliveries leaves its queue, or ``None``.

    It stays (requeued) when asked to and ``max_attempts`` allows another try.
    """
    max_attempts = options.max_attempts
    if requeue and (max_attempts is None or attempt < max_attempts):
        return None
    return reason if not requeue else "max_attempts"


def give_back_op(
    queue: str, options: QueueOptions, entry: Entry, requeue: bool, reason: str, now: float
) -> Op:
    """The op that gives back a message held on another node (shared storage's REST nack)."""
    why = give_up_reason(options, entry.attempt, requeue, reason)
    if why is None:
        return Requeue(entry.id, entry.attempt, queue)
    target = options.dead_letter_queue
    if target is not None and target != queue:
        return DeadLetter(entry.id, queue, target, why)
    return Fail(queue, entry.id, why, now)


class BodyBudget:
    """Bytes of message bodies that pending messages may keep in memory, shared by all queues."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes if they fit; return whether they did."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def force(self, size: int) -> None:
        """Reserve ``size`` bytes even past the limit (bodies loaded for delivery)."""
        self.used += size

    def give(self, size: int) -> None:
        """Return ``size`` bytes."""
        self.used -= size


class Consumer:
    """A push consumer: its prefetch (credit ceiling) and the messages it holds."""

    __slots__ = ("held", "id", "label", "prefetch", "since")

    def __init__(self, id: int, prefetch: int, label: str = "", since: float = 0.0) -> None:
        self.id = id
        self.prefetch = prefetch
        self.label = label
        self.since = since
        self.held: set[int] = set()

    @property
    def credit(self) -> int:
        """How many more deliveries it may receive now."""
        return self.prefetch - len(self.held)


class Published(NamedTuple):
    """The outcome of one publish: the message id and whether it was a deduplicated repeat."""

    id: int
    created_at: float
    duplicate: bool


class SettleOutcome(NamedTuple):
    """Ids settled by an ack/nack and, for the others, the error that prevented it."""

    settled: list[int]
    errors: dict[int, Exception]


class QueueState:
    """Pending order, leases and consumers of one queue, and the rules that move messages.

    Args:
        name: the queue's name.
        options: its options (`QueueOptions`); replace with `set_options`.
        budget: the body budget shared with the other queues.
        dedup_window_s: how long a ``dedup_id`` is remembered.
        shared: the database owns the pending order (see the module docstring).
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
        shared: bool = False,
    ) -> None:
        self.name = name
        self.shared = shared
        self.stored_pending = 0
        self.stored_bytes = 0
        self._want = shared
        self._woken = 0
        self._woken_at_claim = 0
        self._claiming = False
        self._claims: list[int] = []
        self._wakes: list[float] = []
        self.options = options
        self.budget = budget
        self.dedup_window_s = dedup_window_s
        self._pending: list[deque[Item]] = [deque() for _ in range(PRIORITIES)]
        self.pending_count = 0
        self.pending_bytes = 0
        self._delayed: list[tuple[float, int, Entry]] = []
        self._delayed_ids: set[int] = set()
        self.processing: dict[int, Entry] = {}
        self._leases: list[tuple[float, int]] = []
        self._expiries: list[tuple[float, int]] = []
        self._expiring: dict[int, Entry] = {}
        self.consumers: dict[int, Consumer] = {}
        self._ready: deque[int] = deque()
        self._dedup: dict[str, tuple[int, float, float]] = {}
        self._dedup_order: deque[tuple[float, str]] = deque()
        self._loading = False
        self.processed = processed
        self.failed = failed
        self.published_total = 0
        self.delivered_total = 0
        self.acked_total = 0
        self.nacked_total = 0
        self._deliveries: list[tuple[int, Entry]] = []
        self._ops: list[Op] = []
        self._dead: list[tuple[str, Item]] = []
        self._loads: list[int] = []

    # -- outboxes ---------------------------------------------------------------

    def take_deliveries(self) -> list[tuple[int, Entry]]:
        """Return and clear the ``(consumer id, entry)`` pairs to push."""
        out, self._deliveries = self._deliveries, []
        return out

    def take_ops(self) -> list[Op]:
        """Return and clear the journal operations to write."""
        out, self._ops = self._ops, []
        return out

    def take_dead_letters(self) -> list[tuple[str, Item]]:
        """Return and clear the ``(target queue, message)`` pairs to hand to other queues."""
        out, self._dead = self._dead, []
        return out

    def take_loads(self) -> list[int]:
        """Return and clear the ids whose bodies must be read from storage (then `hydrate`)."""
        out, self._loads = self._loads, []
        return out

    def take_claims(self) -> int:
        """Return and clear how many messages to claim from shared storage (then `claimed`)."""
        out, self._claims = sum(self._claims), []
        return out

    # -- counts -----------------------------------------------------------------

    @property
    def delayed_count(self) -> int:
        """Messages waiting for their ``deliver_at``."""
        return len(self._delayed_ids)

    @property
    def ready_count(self) -> int:
        """Messages that may be delivered now (cold ones included)."""
        return self.pending_count

    @property
    def held_bytes(self) -> int:
        """Bytes of pending messages, those in shared storage included."""
        return self.pending_bytes + self.stored_bytes

    def set_options(self, options: QueueOptions) -> None:
        """Apply new options; they govern the next publish, lease and nack."""
        self.options = options

    # -- publish ----------------------------------------------------------------

    def publish(
        self,
        requests: Sequence[PublishRequest],
        now: float,
        next_id: Callable[[], int],
    ) -> list[Published]:
        """Enqueue ``requests`` atomically: all of them, or none if the queue is full.

        Raises:
            QueueFull: with ``overflow=reject_publish``, when the new messages
                would pass ``max_length`` or ``max_bytes``.
        """
        self._prune_dedup(now)
        count = size = 0
        batch_dedup: set[str] = set()
        for request in requests:
            if request.dedup_id is not None:
                if request.dedup_id in self._dedup or request.dedup_id in batch_dedup:
                    continue
                batch_dedup.add(request.dedup_id)
            count += 1
            size += len(request.content)
        self._make_room(count, size, now)
        results: list[Published] = []
        for request in requests:
            dedup_id = request.dedup_id
            if dedup_id is not None:
                # A repeat within this batch finds the first one here too.
                seen = self._dedup.get(dedup_id)
                if seen is not None:
                    results.append(Published(seen[0], seen[1], True))
                    continue
            entry = self._new_entry(request, now, next_id())
            published = Published(entry.id, now, False)
            if dedup_id is not None:
                expires = now + self.dedup_window_s
                self._dedup[dedup_id] = (entry.id, now, expires)
                self._dedup_order.append((expires, dedup_id))
            self._ops.append(Insert(self.name, entry))
            self.published_total += 1
            if self.shared:
                # Every node claims it from storage; count it until counts are read again.
                self.stored_pending += 1
                self.stored_bytes += entry.size
            elif entry.deliver_at > now:
                self._add_delayed(entry)
            else:
                entry.deliver_at = 0.0
                self._push_new(entry)
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
        )

    def emit(self, op: Op) -> None:
        """Add an operation decided outside the state (a restore) to the journal outbox."""
        self._ops.append(op)

    def check_room(self, count: int, size: int) -> None:
        """Raise `QueueFull` if ``count`` more messages of ``size`` bytes would not fit.

        With ``drop_head``, only what no dropping can make room for is refused.
        """
        options = self.options
        if options.overflow is not Overflow.REJECT_PUBLISH:
            # drop_head makes room by dropping, except for what can never fit.
            if options.max_length is not None and count > options.max_length:
                raise QueueFull(self.name, f"max_length {options.max_length}")
            if options.max_bytes is not None and size > options.max_bytes:
                raise QueueFull(self.name, f"max_bytes {options.max_bytes}")
            return
        total = self.pending_count + self.delayed_count + self.stored_pending
        if options.max_length is not None and total + count > options.max_length:
            raise QueueFull(self.name, f"max_length {options.max_length}")
        if options.max_bytes is not None and self.held_bytes + size > options.max_bytes:
            raise QueueFull(self.name, f"max_bytes {options.max_bytes}")

    def _make_room(self, count: int, size: int, now: float) -> None:
        options = self.options
        max_length, max_bytes = options.max_length, options.max_bytes
        if max_length is None and max_bytes is None:
            return
        total = self.pending_count + self.delayed_count + self.stored_pending

        def over() -> str | None:
            if max_length is not None and total + count > max_length:
                return f"max_length {max_length}"
            if max_bytes is not None and self.held_bytes + size > max_bytes:
                return f"max_bytes {max_bytes}"
            return None

        limit = over()
        if limit is None:
            return
        if options.overflow is Overflow.REJECT_PUBLISH or (
            max_length is not None and count > max_length
        ):
            raise QueueFull(self.name, limit)
        if max_bytes is not None and size > max_bytes:
            raise QueueFull(self.name, f"max_bytes {max_bytes}")
        if self.shared:
            # The oldest messages are in storage: it drops them in this batch.
            drop = max(0, total + count - max_length) if max_length is not None else 0
            free = max(0, self.held_bytes + size - max_bytes) if max_bytes is not None else 0
            target = options.dead_letter_queue
            self._ops.append(Trim(self.name, drop, free, target if target != self.name else None))
            self.stored_pending = max(0, self.stored_pending - drop)
            self.stored_bytes = max(0, self.stored_bytes - free)
            return
        while over() is not None:
            item = self._pop_oldest()
            if item is None:
                raise QueueFull(self.name, limit)
            total -= 1
            self._dead_letter(item, "maxlen", now, drop=True)

    def _pop_oldest(self) -> Item | None:
        """Remove the oldest pending message (lowest id at the head of any priority)."""
        heads = [dq for dq in self._pending if dq]
        if heads:
            dq = min(heads, key=lambda d: _item_id(d[0]))
            item = dq.popleft()
            self._forget_pending(item)
            return item
        if self._delayed:
            _, _, entry = heapq.heappop(self._delayed)
            self._forget_delayed(entry)
            return entry
        return None

    def _push_new(self, entry: Entry) -> None:
        self.pending_count += 1
        self.pending_bytes += entry.size
        if entry.expires_at:
            self._expiring[entry.id] = entry
            heapq.heappush(self._expiries, (entry.expires_at, entry.id))
        if entry.content is not None and not self.budget.take(entry.size):
            # The body is in the write-behind buffer until its batch commits and
            # storage from then on: this item keeps only what ordering needs.
            if not entry.expires_at:
                self._pending[entry.priority].append(
                    pack_cold(entry.id, entry.priority, entry.size)
                )
                return
            self.budget.force(entry.size)
        self._pending[entry.priority].append(entry)

    def _add_delayed(self, entry: Entry) -> None:
        self.pending_bytes += entry.size
        self._delayed_ids.add(entry.id)
        if entry.content is not None:
            self.budget.force(entry.size)
        heapq.heappush(self._delayed, (entry.deliver_at, entry.id, entry))

    def _forget_pending(self, item: Item) -> None:
        """Account for an item taken out of a ``pending`` deque."""
        self.pending_count -= 1
        self.pending_bytes -= _item_size(item)
        if isinstance(item, Entry):
            self._expiring.pop(item.id, None)
            if item.content is not None:
                self.budget.give(item.size)

    def _forget_delayed(self, entry: Entry) -> None:
        """Account for an entry popped from the delay heap."""
        self._delayed_ids.discard(entry.id)
        self.pending_bytes -= entry.size
        if entry.content is not None:
            self.budget.give(entry.size)

    # -- replay and adoption ----------------------------------------------------

    def restore(
        self,
        cold: Iterable[tuple[int, int, int]],
        delayed: Iterable[Entry],
        dedup: Iterable[tuple[str, int, float]] = (),
    ) -> None:
        """Rebuild pending order and the dedup window from storage at start (no journal ops)."""
        for dedup_id, id, created_at in sorted(dedup, key=lambda row: row[2]):
            expires = created_at + self.dedup_window_s
            self._dedup[dedup_id] = (id, created_at, expires)
            self._dedup_order.append((expires, dedup_id))
        pending = self._pending
        count = size_total = 0
        for id, priority, size in cold:
            pending[priority].append(pack_cold(id, priority, size))
            count += 1
            size_total += size
        self.pending_count += count
        self.pending_bytes += size_total
        for entry in delayed:
            self._add_delayed(entry)

    def remember_dedup(self, dedup_id: str, id: int, created_at: float, now: float) -> None:
        """Shared mode: a node published ``id`` with ``dedup_id``: a repeat here is one too."""
        expires = created_at + self.dedup_window_s
        if dedup_id in self._dedup or expires <= now:
            return
        self._dedup[dedup_id] = (id, created_at, expires)
        # Another node's clock: close enough to keep the order for pruning.
        self._dedup_order.append((expires, dedup_id))

    def adopt(self, item: Item, now: float) -> None:
        """Take a message dead-lettered (or restored) from another queue; storage moved it."""
        if self.shared:
            # It waits in storage for a claim, like any pending message there.
            return
        if isinstance(item, int):
            _, priority, size = unpack_cold(item)
            self._pending[priority].append(item)
            self.pending_count += 1
            self.pending_bytes += size
            return
        item.consumer = None
        item.lease_deadline = 0.0
        if item.deliver_at > now:
            self._add_delayed(item)
        else:
            item.deliver_at = 0.0
            self._push_new(item)

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
            # Counts against max_attempts: a message that kills its consumer
            # every time is dead-lettered instead of looping for ever.
            self._give_back(entry, True, "consumer gone", now)
        return len(held)

    def dispatch(self, now: float) -> None:
        """Hand ready messages to consumers with credit, round robin."""
        ready = self._ready
        consumers = self.consumers
        while ready and self.pending_count:
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

    def balance(self, waiting: int) -> None:
        """Shared mode: claim what consumers' credit and ``waiting`` pulls need, release the rest.

        A claim is asked for (`take_claims`) only while ready messages may be
        in storage (`wake`) and no claim is on its way. Claimed messages no
        consumer here has credit for, with no pull waiting, go back to storage.
        """
        if not self.shared:
            return
        consumers = self.consumers
        credit = sum(consumers[id].credit for id in self._ready)
        if not credit and not waiting and self.pending_count:
            self._release_pending()
            return
        demand = min(credit + waiting - self.pending_count, _MAX_CLAIM)
        if demand > 0 and self._want and not self._claiming:
            self._claiming = True
            self._woken_at_claim = self._woken
            self._claims.append(demand)

    def claimed(self, entries: Sequence[Entry], requested: int) -> None:
        """Take the messages a claim of ``requested`` leased to this node (then `dispatch`)."""
        self._claiming = False
        if len(entries) < requested and self._woken == self._woken_at_claim:
            # Storage had no more ready, and nothing was told since the claim
            # left (it may have missed that): wait to be told before asking again.
            self._want = False
        for entry in entries:
            entry.deliver_at = 0.0
            self._pending[entry.priority].append(entry)
            self.pending_count += 1
            self.pending_bytes += entry.size
            self.budget.force(entry.size)
            if entry.expires_at:
                self._expiring[entry.id] = entry
                heapq.heappush(self._expiries, (entry.expires_at, entry.id))

    @property
    def claiming(self) -> bool:
        """Whether a claim was asked for and not yet answered."""
        return self._claiming

    def claim_failed(self) -> None:
        """The claim asked for failed; the next `balance` asks again."""
        self._claiming = False

    def wake(self, at: float, now: float) -> None:
        """Shared mode: messages are ready in storage now, or will be at ``at``."""
        if at > now:
            heapq.heappush(self._wakes, at)
        else:
            self._want = True
            self._woken += 1

    def _release_pending(self) -> None:
        for dq in self._pending:
            while dq:
                entry = dq.popleft()
                assert isinstance(entry, Entry), "shared mode keeps no cold items"
                self._forget_pending(entry)
                self._ops.append(Release(self.name, entry.id, entry.attempt))

    def pull(self, max_count: int, lease_s: float | None, now: float) -> list[Entry]:
        """Lease up to ``max_count`` ready messages to a pull consumer (REST long poll)."""
        lease = lease_s if lease_s is not None else self.options.lease
        out: list[Entry] = []
        while len(out) < max_count and self.pending_count:
            entry = self._next_ready(now)
            if entry is None:
                break
            self._lease(entry, None, lease, now)
            out.append(entry)
        return out

    def can_deliver(self) -> bool:
        """Whether a ready message with its body sits at the head (no load needed)."""
        for dq in reversed(self._pending):
            if dq:
                return not _needs_load(dq[0])
        return False

    def _next_ready(self, now: float) -> Entry | None:
        """Pop the next deliverable entry, expiring stale ones; ``None`` if empty or loading."""
        for dq in reversed(self._pending):
            while dq:
                head = dq[0]
                if _needs_load(head):
                    self._request_load(dq)
                    return None
                assert isinstance(head, Entry), "hot items are entries"
                dq.popleft()
                self._forget_pending(head)
                if head.expires_at and head.expires_at <= now:
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
        self._ops.append(DeliverOp(entry.id, entry.attempt, deadline))

    def _request_load(self, dq: deque[Item]) -> None:
        if self._loading:
            return
        ids = []
        for item in dq:
            if not _needs_load(item):
                break
            ids.append(_item_id(item))
            if len(ids) >= LOAD_BATCH:
                break
        self._loading = True
        self._loads.extend(ids)

    def hydrate(self, entries: Sequence[Entry], requested: Sequence[int]) -> None:
        """Put loaded bodies in place of the cold items ``requested`` (missing ones are gone).

        Call with the answer of the load that `take_loads` asked for, then `dispatch`.
        """
        self._loading = False
        loaded = {e.id: e for e in entries}
        wanted = set(requested)
        for dq in self._pending:
            if not dq or not wanted:
                continue
            kept: list[Item] = []
            scanned = 0
            while dq and wanted and scanned < len(requested) + LOAD_BATCH:
                item = dq.popleft()
                scanned += 1
                id = _item_id(item)
                if id in wanted and _needs_load(item):
                    wanted.discard(id)
                    fresh = loaded.get(id)
                    if fresh is None:
                        # Deleted in storage meanwhile (purge raced the load).
                        self.pending_count -= 1
                        self.pending_bytes -= _item_size(item)
                        continue
                    fresh.deliver_at = 0.0
                    if id in self._expiring:
                        # Its TTL was armed on the body-less entry this replaces.
                        self._expiring[id] = fresh
                    self.budget.force(fresh.size)
                    kept.append(fresh)
                else:
                    kept.append(item)
            dq.extendleft(reversed(kept))

    def hydrate_failed(self) -> None:
        """The load asked for failed; the next `dispatch` asks again."""
        self._loading = False

    # -- settlement -------------------------------------------------------------

    def _take_leased(self, id: int, consumer_id: int | None, operation: str) -> Entry:
        entry = self.processing.get(id)
        if entry is None:
            raise InvalidTransition(id, operation, "not processing")
        if consumer_id is not None and entry.consumer != consumer_id:
            raise MessageNotFound(id)
        del self.processing[id]
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
                self._take_leased(id, consumer_id, "ack")
            except (InvalidTransition, MessageNotFound) as exc:
                errors[id] = exc
                continue
            self.processed += 1
            self.acked_total += 1
            self._ops.append(AckOp(self.name, id, now))
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
    ) -> SettleOutcome:
        """Give leased messages back: requeued (redelivered) or, without requeue, dead-lettered.

        A message that has used ``max_attempts`` deliveries is dead-lettered even
        when ``requeue`` is true.
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
            self._give_back(entry, requeue, reason or "rejected", now)
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

    def _give_back(self, entry: Entry, requeue: bool, reason: str, now: float) -> None:
        why = give_up_reason(self.options, entry.attempt, requeue, reason)
        if why is None:
            self._requeue(entry)
        else:
            self._dead_letter(entry, why, now)

    def _requeue(self, entry: Entry) -> None:
        entry.redelivered = True
        entry.consumer = None
        entry.lease_deadline = 0.0
        if self.shared:
            # Back to storage, where any node may claim it.
            self._ops.append(Requeue(entry.id, entry.attempt, self.name))
            return
        self._pending[entry.priority].appendleft(entry)
        self.pending_count += 1
        self.pending_bytes += entry.size
        if entry.content is not None:
            self.budget.force(entry.size)
        self._ops.append(Requeue(entry.id, entry.attempt, self.name))

    def _dead_letter(self, item: Item, reason: str, now: float, *, drop: bool = False) -> None:
        """Send a message that left the queue to the dead-letter queue, or end it.

        Without a dead-letter queue, ``drop`` (expired, pushed out by
        ``drop_head``) deletes it; otherwise it is failed. ``reason`` may be a
        client's text, so it never decides between the two.
        """
        target = self.options.dead_letter_queue
        id = _item_id(item)
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
            self._ops.append(DeadLetter(id, self.name, target, reason))
            if not self.shared:
                self._dead.append((target, item))
        elif drop:
            self._ops.append(Drop(id))
        else:
            self.failed += 1
            self._ops.append(Fail(self.name, id, reason, now))

    # -- time -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Apply every deadline due by ``now``: leases, delays, TTLs, dedup window."""
        leases = self._leases
        while leases and leases[0][0] <= now:
            deadline, id = heapq.heappop(leases)
            entry = self.processing.get(id)
            if entry is not None and entry.lease_deadline == deadline:
                self._take_leased(id, None, "expire")
                self._give_back(entry, True, "lease expired", now)
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, id, entry = heapq.heappop(delayed)
            self._forget_delayed(entry)
            entry.deliver_at = 0.0
            self._push_new(entry)
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, id = heapq.heappop(expiries)
            self._expire_pending(id, now)
        wakes = self._wakes
        while wakes and wakes[0] <= now:
            heapq.heappop(wakes)
            self._want = True
            self._woken += 1
        self._prune_dedup(now)

    def _expire_pending(self, id: int, now: float) -> None:
        entry = self._expiring.get(id)
        if entry is None:
            return
        dq = self._pending[entry.priority]
        # Expiring messages are usually near the head: the scan stays short.
        for index, item in enumerate(dq):
            if item is entry:
                del dq[index]
                self._forget_pending(entry)
                self._dead_letter(entry, "expired", now, drop=True)
                return

    def next_deadline(self) -> float | None:
        """The earliest instant at which `tick` has work, or ``None``."""
        candidates = [heap[0][0] for heap in (self._leases, self._delayed, self._expiries) if heap]
        if self._wakes:
            candidates.append(self._wakes[0])
        if self._dedup_order:
            candidates.append(self._dedup_order[0][0])
        return min(candidates) if candidates else None

    def _prune_dedup(self, now: float) -> None:
        order = self._dedup_order
        while order and order[0][0] <= now:
            _, dedup_id = order.popleft()
            seen = self._dedup.get(dedup_id)
            if seen is not None and seen[2] <= now:
                del self._dedup[dedup_id]

    # -- bulk -------------------------------------------------------------------

    def purge(self) -> int:
        """Delete every pending and delayed message; leased ones stay. Return how many.

        In shared mode only the messages claimed here are deleted by this
        (the storage deletes its own pending ones).
        """
        count = self.pending_count + self.delayed_count
        if self.shared:
            for dq in self._pending:
                for item in dq:
                    self._ops.append(Drop(_item_id(item)))
        for dq in self._pending:
            for item in dq:
                if isinstance(item, Entry) and item.content is not None:
                    self.budget.give(item.size)
            dq.clear()
        for _, _, entry in self._delayed:
            if entry.content is not None:
                self.budget.give(entry.size)
        self._delayed.clear()
        self._delayed_ids.clear()
        self._expiries.clear()
        self._expiring.clear()
        self.pending_count = 0
        self.pending_bytes = 0
        if not self.shared:
            self._ops.append(PurgeQueue(self.name))
        return count

    def remove_pending(self, id: int) -> Item | None:
        """Take one message out of ``pending`` (to move it elsewhere); ``None`` if not there."""
        for dq in self._pending:
            for index, item in enumerate(dq):
                if _item_id(item) == id:
                    del dq[index]
                    self._forget_pending(item)
                    return item
        return None

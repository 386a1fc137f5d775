"""`PendingOrder`: the messages of one queue that wait for delivery, and their bookkeeping.

It holds the ready messages by priority (FIFO within one), the delayed ones
by ``deliver_at``, the index of TTL deadlines, the counts and bytes a queue
shows and limits, the share of the `BodyBudget` its bodies use, and the
loads of *cold* bodies. Each change of the order is one method, so the
counts, the budget and the indexes can't drift apart; `QueueState` decides
*when* a message moves, this class keeps the books.

Memory grows with work in flight, not with the backlog: a ready message is
either an `Entry` with its body, or, once the budget is spent, a cold item,
one int packing ``(id, priority, size)`` (`pack_cold`), whose body stays in
storage until it nears the head and is loaded in a batch (`take_loads`,
then `hydrate`).

Where the next rules belong: per-group FIFO with round robin across groups
replaces the per-priority deques behind `pop_next` and `requeue`; a retry
back-off is `backoff` of a requeued entry (the delay heap, its body kept only
within the budget); "why is it waiting" is a lookup here (delayed, behind a
cold head, ...).
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from .messages import Entry

if TYPE_CHECKING:
    from collections.abc import Iterator, MutableSequence, Sequence

__all__ = [
    "BODY_CACHE_BYTES",
    "LOAD_BATCH",
    "PRIORITIES",
    "BodyBudget",
    "Item",
    "PendingOrder",
    "Recount",
    "created_of",
    "item_id",
    "pack_cold",
    "remove_item",
    "unpack_cold",
]

PRIORITIES = 10
BODY_CACHE_BYTES = 48 << 20
"""The default `BodyBudget` of a broker (``Settings.body_cache_bytes``, where it is measured)."""
LOAD_BATCH = 256
"""How many cold messages one storage read brings back."""

Item = Entry | int
"""A pending message: an `Entry`, or a cold item (`pack_cold`)."""


def pack_cold(id: int, priority: int, size: int) -> int:
    """Pack a cold message's id, priority and size into one int (36 bytes in memory)."""
    return (id << 36) | (priority << 32) | size


def unpack_cold(item: int) -> tuple[int, int, int]:
    """Return ``(id, priority, size)`` of a cold item."""
    return item >> 36, (item >> 32) & 0xF, item & 0xFFFFFFFF


def item_id(item: Item) -> int:
    """The message id of a pending item, cold or not."""
    return item >> 36 if isinstance(item, int) else item.id


def created_of(item: Item) -> float:
    """The ``created_at`` of a pending item, 0 for a cold one (its row holds it)."""
    return 0.0 if isinstance(item, int) else item.created_at


def _item_size(item: Item) -> int:
    return item & 0xFFFFFFFF if isinstance(item, int) else item.size


def _needs_load(item: Item) -> bool:
    return isinstance(item, int) or item.content is None


class Recount(NamedTuple):
    """What `PendingOrder.recount` finds: counts as its running ones should be."""

    ready: int
    delayed: int
    bytes: int
    hot_bytes: int
    """Bytes of the bodies held in memory: this queue's share of the `BodyBudget`."""


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


def remove_item(queue: MutableSequence[Item], entry: Entry) -> bool:
    """Delete ``entry`` from ``queue``; whether it was there.

    Expiring messages are usually near the head: the scan stays short.
    """
    for index, item in enumerate(queue):
        if item is entry:
            del queue[index]
            return True
    return False


class PendingOrder:
    """The ready and delayed messages of one queue, in delivery order, with their counts.

    Args:
        budget: the body budget shared with the other queues.

    Attributes:
        count: ready messages (cold ones included).
        bytes: bytes of ready and delayed messages.
    """

    __slots__ = (
        "_delayed",
        "_delayed_ids",
        "_expiries",
        "_expiring",
        "_loading",
        "_loads",
        "_ready",
        "budget",
        "bytes",
        "count",
    )

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self._ready: list[deque[Item]] = [deque() for _ in range(PRIORITIES)]
        self.count = 0
        self.bytes = 0
        self._delayed: list[tuple[float, int, Entry]] = []
        self._delayed_ids: set[int] = set()
        self._expiries: list[tuple[float, int]] = []
        self._expiring: dict[int, Entry] = {}
        self._loading = False
        self._loads: list[int] = []

    # -- reading ----------------------------------------------------------------

    @property
    def delayed_count(self) -> int:
        """Messages waiting for their ``deliver_at``."""
        return len(self._delayed_ids)

    def ids(self) -> list[int]:
        """Ids of the ready messages in delivery order (highest priority first)."""
        return [item_id(item) for dq in reversed(self._ready) for item in dq]

    def delayed_ids(self) -> list[int]:
        """Ids of the delayed messages, earliest ``deliver_at`` first."""
        return [entry.id for _, _, entry in sorted(self._delayed)]

    def entries(self) -> Iterator[Entry]:
        """The ready messages that are entries (bodies loaded or not), in delivery order."""
        for dq in reversed(self._ready):
            for item in dq:
                if isinstance(item, Entry):
                    yield item

    def recount(self) -> Recount:
        """The counts recomputed from the contents (slow: for checks, not for serving)."""
        items = [item for dq in self._ready for item in dq]
        delayed = [entry for _, _, entry in self._delayed]
        hot = [i for i in items if isinstance(i, Entry) and i.content is not None]
        hot += [e for e in delayed if e.content is not None]
        return Recount(
            ready=len(items),
            delayed=len(delayed),
            bytes=sum(_item_size(i) for i in items) + sum(e.size for e in delayed),
            hot_bytes=sum(e.size for e in hot),
        )

    def next_deadline(self) -> float | None:
        """The earliest ``deliver_at`` or TTL deadline, or ``None``."""
        delayed, expiries = self._delayed, self._expiries
        if delayed and expiries:
            return min(delayed[0][0], expiries[0][0])
        if delayed:
            return delayed[0][0]
        return expiries[0][0] if expiries else None

    # -- adding -----------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """A new ready message at the tail of its priority; cold if its body won't fit."""
        self.count += 1
        self.bytes += entry.size
        if entry.expires_at:
            self._expiring[entry.id] = entry
            heapq.heappush(self._expiries, (entry.expires_at, entry.id))
        if entry.content is not None and not self.budget.take(entry.size):
            # The body is in the write-behind buffer until its batch commits and
            # storage from then on: this item keeps only what ordering needs.
            if not entry.expires_at:
                self._ready[entry.priority].append(pack_cold(entry.id, entry.priority, entry.size))
                return
            self.budget.force(entry.size)
        self._ready[entry.priority].append(entry)

    def append_loaded(self, entry: Entry) -> None:
        """A ready message whose body must stay in memory (claimed for delivery)."""
        self._ready[entry.priority].append(entry)
        self.count += 1
        self.bytes += entry.size
        self.budget.force(entry.size)
        if entry.expires_at:
            self._expiring[entry.id] = entry
            heapq.heappush(self._expiries, (entry.expires_at, entry.id))

    def append_cold(self, item: int) -> None:
        """A ready message whose body is in storage, at the tail of its priority."""
        _, priority, size = unpack_cold(item)
        self._ready[priority].append(item)
        self.count += 1
        self.bytes += size

    def requeue(self, entry: Entry) -> None:
        """A message given back, at the head of its priority (it goes again first)."""
        self._ready[entry.priority].appendleft(entry)
        self.count += 1
        self.bytes += entry.size
        if entry.content is not None:
            self.budget.force(entry.size)

    def delay(self, entry: Entry) -> None:
        """A message that waits for its ``deliver_at``."""
        self.bytes += entry.size
        self._delayed_ids.add(entry.id)
        if entry.content is not None:
            self.budget.force(entry.size)
        heapq.heappush(self._delayed, (entry.deliver_at, entry.id, entry))

    def backoff(self, entry: Entry, hold: bool = False) -> None:
        """A message given back (or rescheduled) that waits for its ``deliver_at``.

        ``hold``: a message given back keeps its group's place (`groups.GroupedOrder`).

        Unlike a delayed publish it keeps its body only within the budget: a
        queue with many messages in back-off holds little more than their ids
        (the body is read back from storage when it is due, as a cold one's).
        """
        if entry.content is not None and not self.budget.take(entry.size):
            entry.content = None
        self.bytes += entry.size
        self._delayed_ids.add(entry.id)
        heapq.heappush(self._delayed, (entry.deliver_at, entry.id, entry))

    def promote_due(self, now: float) -> None:
        """Make the delayed messages due by ``now`` ready, in ``deliver_at`` order."""
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, entry = heapq.heappop(delayed)
            self._forget_delayed(entry)
            entry.deliver_at = 0.0
            self.append(entry)

    # -- taking -----------------------------------------------------------------

    def pop_next(self) -> Entry | None:
        """Take the head of the highest priority; ``None`` if empty or its body is cold.

        A cold head asks for a load of the bodies behind it (`take_loads`).
        """
        for dq in reversed(self._ready):
            if dq:
                head = dq[0]
                if _needs_load(head):
                    self._request_load(dq)
                    return None
                assert isinstance(head, Entry), "hot items are entries"
                dq.popleft()
                self._forget(head)
                return head
        return None

    def pop_expired(self, now: float) -> Entry | None:
        """Take one ready message whose TTL ran out by ``now``; ``None`` when there is none."""
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, id = heapq.heappop(expiries)
            entry = self._expiring.get(id)
            if entry is not None and self._unlink(entry):
                self._forget(entry)
                return entry
        return None

    def _unlink(self, entry: Entry) -> bool:
        """Take ready ``entry`` out of the queue that holds it; whether it was there."""
        return remove_item(self._ready[entry.priority], entry)

    def pop_oldest(self) -> Item | None:
        """Take the oldest message (lowest id at a ready head, else the first delayed)."""
        heads = [dq for dq in self._ready if dq]
        if heads:
            dq = min(heads, key=lambda d: item_id(d[0]))
            item = dq.popleft()
            self._forget(item)
            return item
        if self._delayed:
            _, _, entry = heapq.heappop(self._delayed)
            self._forget_delayed(entry)
            return entry
        return None

    def remove(self, id: int) -> Item | None:
        """Take ready message ``id`` out wherever it is; ``None`` if it isn't ready here."""
        for dq in self._ready:
            for index, item in enumerate(dq):
                if item_id(item) == id:
                    del dq[index]
                    self._forget(item)
                    return item
        return None

    def remove_delayed(self, id: int) -> Entry | None:
        """Take delayed message ``id`` off the timer heap; ``None`` if it isn't delayed here."""
        if id not in self._delayed_ids:
            return None
        delayed = self._delayed
        for index, (_, entry_id, entry) in enumerate(delayed):
            if entry_id == id:
                delayed[index] = delayed[-1]
                delayed.pop()
                heapq.heapify(delayed)
                self._forget_delayed(entry)
                return entry
        return None  # pragma: no cover - the ids and the heap agree

    def withdraw(self, ids: set[int]) -> list[int]:
        """Take out every ready or delayed message whose id is in ``ids``; return those found."""
        found: list[int] = []
        for dq in self._ready:
            if any(item_id(item) in ids for item in dq):
                kept = []
                for item in dq:
                    if item_id(item) in ids:
                        self._forget(item)
                        found.append(item_id(item))
                    else:
                        kept.append(item)
                dq.clear()
                dq.extend(kept)
        if ids & self._delayed_ids:
            delayed = []
            for at, id, entry in self._delayed:
                if id in ids:
                    self._forget_delayed(entry)
                    found.append(id)
                else:
                    delayed.append((at, id, entry))
            heapq.heapify(delayed)
            self._delayed = delayed
        return found

    def drain(self) -> Iterator[Entry]:
        """Take every ready message, each as it is yielded (claimed ones, given back)."""
        for dq in self._ready:
            while dq:
                entry = dq.popleft()
                assert isinstance(entry, Entry), "claimed messages keep their bodies"
                self._forget(entry)
                yield entry

    def clear(self) -> int:
        """Delete every ready and delayed message; return how many there were."""
        count = self.count + self.delayed_count
        give = self.budget.give
        for dq in self._ready:
            for item in dq:
                if not _needs_load(item):
                    give(_item_size(item))
            dq.clear()
        for _, _, entry in self._delayed:
            if entry.content is not None:
                give(entry.size)
        self._delayed.clear()
        self._delayed_ids.clear()
        self._expiries.clear()
        self._expiring.clear()
        self.count = 0
        self.bytes = 0
        return count

    def _forget(self, item: Item) -> None:
        """Account for an item taken out of a ready deque."""
        self.count -= 1
        self.bytes -= _item_size(item)
        if isinstance(item, Entry):
            self._expiring.pop(item.id, None)
            if item.content is not None:
                self.budget.give(item.size)

    def _forget_delayed(self, entry: Entry) -> None:
        """Account for an entry taken off the delay heap."""
        self._delayed_ids.discard(entry.id)
        self.bytes -= entry.size
        if entry.content is not None:
            self.budget.give(entry.size)

    # -- cold bodies ------------------------------------------------------------

    def take_loads(self) -> list[int]:
        """Return and clear the ids whose bodies must be read from storage (then `hydrate`)."""
        out, self._loads = self._loads, []
        return out

    def _request_load(self, dq: deque[Item]) -> None:
        if self._loading:
            return
        ids = []
        for item in dq:
            if not _needs_load(item):
                break
            ids.append(item_id(item))
            if len(ids) >= LOAD_BATCH:
                break
        self._loading = True
        self._loads.extend(ids)

    def hydrate(self, entries: Sequence[Entry], requested: Sequence[int]) -> None:
        """Put loaded bodies in place of the cold items ``requested`` (missing ones are gone)."""
        self._loading = False
        loaded = {e.id: e for e in entries}
        wanted = set(requested)
        for dq in self._ready:
            if not dq or not wanted:
                continue
            kept: list[Item] = []
            scanned = 0
            while dq and wanted and scanned < len(requested) + LOAD_BATCH:
                item = dq.popleft()
                scanned += 1
                id = item_id(item)
                if id in wanted and _needs_load(item):
                    wanted.discard(id)
                    fresh = loaded.get(id)
                    if fresh is None:
                        # Deleted in storage meanwhile (purge raced the load).
                        self.count -= 1
                        self.bytes -= _item_size(item)
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

    def load_failed(self) -> None:
        """The load asked for failed; the next `pop_next` at a cold head asks again."""
        self._loading = False

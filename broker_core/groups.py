"""Message groups: strict order within a group, round robin across groups (issue 24).

`GroupedOrder` extends `pending.PendingOrder` with one FIFO per group that
has pending messages and a round-robin ring of the groups that may deliver.
Ungrouped messages keep the per-priority deques of `PendingOrder` and take
ONE slot in the ring (key ``""``, not a valid group name): with G ready
groups, ungrouped messages get one delivery in G + 1.

Rules:

* at most ``concurrency`` messages of a group are in flight (leased); the
  group's next message goes only after one is acked, failed or
  dead-lettered (`release`);
* a message given back goes to its group's FIFO in id order, so it goes
  again before the later ones of its group; one given back with a back-off
  (retry policy or a nack's ``delay_ms``) keeps its group's slot until it is
  due (`backoff` with ``hold``): the group waits with it;
* rings per priority: a group sits in the ring of its head's priority;
  higher rings go first, so priority orders the heads of groups, never the
  messages inside one;
* fairness bound: a group with a ready message is served before any other
  group of the same (or a lower) head priority is served twice, i.e. it
  waits at most one round over the other ready groups (and the ungrouped
  slot).

Memory: per group a list (a deque once it passes `BIG_GROUP` messages: a
deque's blocks would cost ~760 bytes for each of 100,000 small groups) and
its name, per pending message the same
cold int as `PendingOrder` (bodies load in batches from storage when they
near a group's head), so memory follows in flight plus groups with pending
messages, not the backlog's bodies.
"""

from __future__ import annotations

import heapq
from collections import deque
from itertools import islice
from typing import TYPE_CHECKING

from .messages import Entry
from .pending import (
    LOAD_BATCH,
    PRIORITIES,
    BodyBudget,
    Item,
    PendingOrder,
    Recount,
    item_id,
    remove_item,
    unpack_cold,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence


BIG_GROUP = 256
"""A group's FIFO is a list up to this many messages, then a deque (O(1) at the head)."""

Fifo = list[Item] | deque[Item]

__all__ = ["BIG_GROUP", "UNGROUPED", "GroupedOrder"]

UNGROUPED = ""
"""The ring slot of the messages without a group."""


def _priority(item: Item) -> int:
    return (item >> 32) & 0xF if isinstance(item, int) else item.priority


def _cold(item: Item) -> bool:
    return isinstance(item, int) or item.content is None


class GroupedOrder(PendingOrder):
    """`PendingOrder` with per-group FIFOs, in-flight slots and a round-robin ring.

    Args:
        budget: the body budget shared with the other queues.
        concurrency: the queue's ``group_concurrency``.
    """

    __slots__ = (
        "_group_loads",
        "_groups",
        "_held",
        "_inflight",
        "_ring_at",
        "_rings",
        "concurrency",
    )

    def __init__(self, budget: BodyBudget, concurrency: int = 1) -> None:
        super().__init__(budget)
        self.concurrency = concurrency
        self._groups: dict[str, Fifo] = {}
        self._inflight: dict[str, int] = {}
        self._rings: list[deque[str]] = [deque() for _ in range(PRIORITIES)]
        self._ring_at: dict[str, int] = {}
        self._held: dict[int, str] = {}
        self._group_loads: dict[int, str] = {}

    def set_concurrency(self, concurrency: int) -> None:
        """Apply a new ``group_concurrency``: groups it frees join the ring."""
        self.concurrency = concurrency
        for group in self._groups:
            self._schedule(group)

    # -- reading ----------------------------------------------------------------

    def group_backlog(self, limit: int = 10) -> list[tuple[str, int, int]]:
        """``(group, pending, in flight)`` of the ``limit`` groups with the most pending."""
        sizes = heapq.nlargest(limit, self._groups.items(), key=lambda kv: len(kv[1]))
        return [(g, len(dq), self._inflight.get(g, 0)) for g, dq in sizes]

    @property
    def loading(self) -> bool:
        """Whether a load of bodies is asked for and not answered yet."""
        return self._loading

    @property
    def group_count(self) -> int:
        """Groups with pending messages."""
        return len(self._groups)

    def in_flight(self, group: str) -> int:
        """Messages of ``group`` processing (or holding its slot in a back-off)."""
        return self._inflight.get(group, 0)

    def position(self, id: int, group: str) -> int | None:
        """Where ready message ``id`` stands in its group (0: the head); ``None`` if not there."""
        for index, item in enumerate(self._groups.get(group, ())):
            if item_id(item) == id:
                return index
        return None

    def item_at(self, group: str, index: int) -> int:
        """The id at ``index`` of ``group``'s ready messages."""
        return item_id(self._groups[group][index])

    def held_of(self, group: str) -> list[int]:
        """Ids of the messages of ``group`` that hold its slot in a back-off."""
        return [id for id, g in self._held.items() if g == group]

    def ids(self) -> list[int]:
        """Ready ids: ungrouped in delivery order, then each group's in its order."""
        return super().ids() + [item_id(i) for dq in self._groups.values() for i in dq]

    def entries(self) -> Iterator[Entry]:
        """The ready entries (ungrouped first, then by group)."""
        yield from super().entries()
        for dq in self._groups.values():
            for item in dq:
                if isinstance(item, Entry):
                    yield item

    def recount(self) -> Recount:
        """The counts recomputed from the contents, groups included."""
        base = super().recount()
        items = [item for dq in self._groups.values() for item in dq]
        hot = [i for i in items if isinstance(i, Entry) and i.content is not None]
        sizes = sum(i & 0xFFFFFFFF if isinstance(i, int) else i.size for i in items)
        return Recount(
            ready=base.ready + len(items),
            delayed=base.delayed,
            bytes=base.bytes + sizes,
            hot_bytes=base.hot_bytes + sum(e.size for e in hot),
        )

    # -- the ring ---------------------------------------------------------------

    def _eligible(self, group: str) -> bool:
        if group == UNGROUPED:
            # The ring only turns while groups exist (`pop_next` takes ungrouped
            # messages in plain order meanwhile); the first group schedules the slot.
            return bool(self._groups) and any(self._ready)
        return bool(self._groups.get(group)) and self._inflight.get(group, 0) < self.concurrency

    def _head_priority(self, group: str) -> int:
        if group == UNGROUPED:
            for priority in range(PRIORITIES - 1, -1, -1):
                if self._ready[priority]:
                    return priority
            return 0
        return _priority(self._groups[group][0])

    def _schedule(self, group: str) -> None:
        """Put ``group`` at the tail of its head's ring if it may deliver and isn't there."""
        if not self._eligible(group):
            return
        priority = self._head_priority(group)
        if self._ring_at.get(group) == priority:
            return
        # A stale place in another ring is skipped when reached.
        self._ring_at[group] = priority
        self._rings[priority].append(group)

    def release(self, entry: Entry) -> None:
        """A message of a group left processing (acked, failed, dead-lettered, given back)."""
        group = entry.group
        if group is None:
            return
        left = self._inflight.get(group, 0) - 1
        if left > 0:
            self._inflight[group] = left
        else:
            self._inflight.pop(group, None)
        if group in self._groups:
            self._schedule(group)

    # -- adding -----------------------------------------------------------------

    def _deque(self, group: str) -> Fifo:
        groups = self._groups
        if group in groups:
            dq = groups[group]
            if len(dq) == BIG_GROUP and isinstance(dq, list):
                dq = groups[group] = deque(dq)
            return dq
        fresh: Fifo = []
        groups[group] = fresh
        if len(groups) == 1:
            self._schedule(UNGROUPED)  # the ring turns from now on (`_eligible`)
        return fresh

    def append(self, entry: Entry) -> None:
        """A new ready message at the tail of its group (or of its priority)."""
        group = entry.group
        if group is None:
            super().append(entry)
            self._schedule(UNGROUPED)
            return
        self.count += 1
        self.bytes += entry.size
        if entry.expires_at:
            self._expiring[entry.id] = entry
            heapq.heappush(self._expiries, (entry.expires_at, entry.id))
        item: Item = entry
        if entry.content is not None and not self.budget.take(entry.size):
            if not entry.expires_at:
                item = (entry.id << 36) | (entry.priority << 32) | entry.size
            else:
                self.budget.force(entry.size)
        dq = self._deque(group)
        dq.append(item)
        if len(dq) == 1:
            # Behind a head, a message changes neither the ring nor its place there.
            self._schedule(group)

    def append_loaded(self, entry: Entry) -> None:
        """A ready message whose body stays in memory (claimed for delivery)."""
        if entry.group is None:
            super().append_loaded(entry)
            self._schedule(UNGROUPED)
            return
        self.count += 1
        self.bytes += entry.size
        self.budget.force(entry.size)
        if entry.expires_at:
            self._expiring[entry.id] = entry
            heapq.heappush(self._expiries, (entry.expires_at, entry.id))
        self._deque(entry.group).append(entry)
        self._schedule(entry.group)

    def append_cold(self, item: int) -> None:
        """An ungrouped ready message whose body is in storage."""
        super().append_cold(item)
        self._schedule(UNGROUPED)

    def append_cold_grouped(self, item: int, group: str) -> None:
        """A ready message of ``group`` whose body is in storage, at its group's tail."""
        dq = self._deque(group)
        dq.append(item)
        self.count += 1
        self.bytes += item & 0xFFFFFFFF
        if len(dq) == 1:
            self._schedule(group)

    def restore_grouped(self, rows: Iterable[tuple[int, str]]) -> None:
        """Cold items of groups read back at start, in id order (one pass, then the ring)."""
        groups = self._groups
        count = size = 0
        for item, group in rows:
            dq = groups.get(group)
            if dq is None:
                dq = groups[group] = []
            elif len(dq) == BIG_GROUP and isinstance(dq, list):
                dq = groups[group] = deque(dq)
            dq.append(item)
            count += 1
            size += unpack_cold(item)[2]
        self.count += count
        self.bytes += size
        self._schedule(UNGROUPED)
        for group in groups:
            self._schedule(group)

    def requeue(self, entry: Entry) -> None:
        """A message given back: before the later messages of its group (or its priority's head)."""
        group = entry.group
        if group is None:
            super().requeue(entry)
            self._schedule(UNGROUPED)
            return
        dq = self._deque(group)
        index = 0
        for item in dq:
            if item_id(item) > entry.id:
                break
            index += 1
        dq.insert(index, entry)
        self.count += 1
        self.bytes += entry.size
        if entry.content is not None:
            self.budget.force(entry.size)
        self._schedule(group)

    def backoff(self, entry: Entry, hold: bool = False) -> None:
        """A message waiting for ``deliver_at``; with ``hold``, it keeps its group's slot."""
        if hold and entry.group is not None:
            self._inflight[entry.group] = self._inflight.get(entry.group, 0) + 1
            self._held[entry.id] = entry.group
        super().backoff(entry)

    def promote_due(self, now: float) -> None:
        """Make due messages ready; a held back-off goes back before its group's later ones."""
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, entry = heapq.heappop(delayed)
            self._forget_delayed(entry)
            entry.deliver_at = 0.0
            if self._held.pop(entry.id, None) is not None:
                self.requeue(entry)
                self.release(entry)
            else:
                self.append(entry)

    # -- taking -----------------------------------------------------------------

    def pop_next(self) -> Entry | None:
        """Take the head of the next group in the ring (highest head priority first).

        ``None`` if nothing may go, or the group whose turn it is has a cold
        head (a load is asked for: `take_loads`).
        """
        if not self._groups:
            return super().pop_next()
        rings, ring_at = self._rings, self._ring_at
        priority = PRIORITIES - 1
        while priority >= 0:
            ring = rings[priority]
            if not ring:
                priority -= 1
                continue
            group = ring[0]
            if ring_at.get(group) != priority:
                ring.popleft()  # stale: it moved to another ring
                continue
            if not self._eligible(group):
                ring.popleft()
                del ring_at[group]
                continue
            head_priority = self._head_priority(group)
            if head_priority != priority:
                ring.popleft()
                del ring_at[group]
                self._schedule(group)
                priority = PRIORITIES - 1
                continue
            if group == UNGROUPED:
                entry = super().pop_next()
                if entry is None:
                    return None
            else:
                dq = self._groups[group]
                head = dq[0]
                if _cold(head):
                    self._request_group_load(priority)
                    return None
                assert isinstance(head, Entry), "hot items are entries"
                del dq[0]  # O(1): a list here is short, a long FIFO a deque
                self._forget(head)
                taken = self._inflight.get(group, 0) + 1
                self._inflight[group] = taken
                ring.popleft()
                del ring_at[group]
                if not dq:
                    del self._groups[group]
                elif taken < self.concurrency:
                    self._schedule(group)
                return head
            ring.popleft()
            del ring_at[group]
            self._schedule(group)
            return entry
        return None

    def _unlink(self, entry: Entry) -> bool:
        if entry.group is None:
            return super()._unlink(entry)
        queue = self._groups.get(entry.group)
        if queue is None or not remove_item(queue, entry):
            return False
        self._drop_empty(entry.group)
        return True

    def _drop_empty(self, group: str | None) -> None:
        if group is not None and not self._groups.get(group, True):
            del self._groups[group]

    def _out(self, item: Item, group: str) -> Entry:
        """A grouped item taken out: cold ones become body-less entries that keep the group."""
        if isinstance(item, Entry):
            return item
        id, priority, size = unpack_cold(item)
        return Entry(id, content=None, size=size, created_at=0.0, priority=priority, group=group)

    def pop_oldest(self) -> Item | None:
        """Take the oldest message, ungrouped or grouped."""
        best: str | None = None
        best_id = -1
        for group, dq in self._groups.items():
            if best is None or item_id(dq[0]) < best_id:
                best, best_id = group, item_id(dq[0])
        heads = [dq for dq in self._ready if dq]
        if best is not None and not (heads and min(item_id(d[0]) for d in heads) < best_id):
            dq = self._groups[best]
            item = dq[0]
            del dq[0]
            self._drop_empty(best)
            self._forget(item)
            return self._out(item, best)
        return super().pop_oldest()

    def remove(self, id: int) -> Item | None:
        """Take ready message ``id`` out wherever it is."""
        found = super().remove(id)
        if found is not None:
            return found
        for group, dq in self._groups.items():
            for index, item in enumerate(dq):
                if item_id(item) == id:
                    del dq[index]
                    self._drop_empty(group)
                    self._forget(item)
                    return self._out(item, group)
        return None

    def remove_delayed(self, id: int) -> Entry | None:
        """Take delayed message ``id`` off the timer heap (a held one frees its group's slot)."""
        entry = super().remove_delayed(id)
        if entry is not None and self._held.pop(id, None) is not None:
            self.release(entry)
        return entry

    def withdraw(self, ids: set[int]) -> list[int]:
        """Take out every ready or delayed message whose id is in ``ids``."""
        held = {id: self._held.pop(id) for id in ids & self._held.keys()}
        found = super().withdraw(ids)
        for group, dq in list(self._groups.items()):
            if any(item_id(item) in ids for item in dq):
                kept: list[Item] = []
                for item in dq:
                    if item_id(item) in ids:
                        self._forget(item)
                        found.append(item_id(item))
                    else:
                        kept.append(item)
                dq.clear()
                dq.extend(kept)
                self._drop_empty(group)
        for id, group in held.items():
            self.release(Entry(id, content=None, size=0, created_at=0.0, group=group))
        return found

    def drain(self) -> Iterator[Entry]:
        """Take every ready message (claimed ones, given back)."""
        yield from super().drain()
        while self._groups:
            group, dq = next(iter(self._groups.items()))
            while dq:
                entry = dq[0]
                del dq[0]
                assert isinstance(entry, Entry), "claimed messages keep their bodies"
                self._forget(entry)
                yield entry
            self._groups.pop(group, None)

    def clear(self) -> int:
        """Delete every ready and delayed message; return how many there were."""
        give = self.budget.give
        for dq in self._groups.values():
            for item in dq:
                if not _cold(item):
                    give(item.size)  # type: ignore[union-attr]
        self._groups.clear()
        for id, group in list(self._held.items()):
            del self._held[id]
            self.release(Entry(id, content=None, size=0, created_at=0.0, group=group))
        return super().clear()

    # -- cold bodies ------------------------------------------------------------

    def _request_group_load(self, priority: int) -> None:
        """Ask for the bodies at the heads of the next groups of the ring."""
        if self._loading:
            return
        loads = self._group_loads
        for group in islice(self._rings[priority], LOAD_BATCH):
            dq = self._groups.get(group)
            if not dq:
                continue
            for item in islice(dq, self.concurrency):
                if _cold(item):
                    loads[item_id(item)] = group
            if len(loads) >= LOAD_BATCH:
                break
        if len(loads) < LOAD_BATCH and self._rings[priority]:
            # Few groups: read further into the first one too.
            first = self._rings[priority][0]
            for item in islice(self._groups.get(first, ()), LOAD_BATCH):
                if _cold(item):
                    loads[item_id(item)] = first
                if len(loads) >= LOAD_BATCH:
                    break
        self._loading = True
        self._loads.extend(loads)

    def hydrate(self, entries: Sequence[Entry], requested: Sequence[int]) -> None:
        """Put loaded bodies in place of the cold items ``requested``."""
        if not self._group_loads:
            super().hydrate(entries, requested)
            return
        self._loading = False
        loads, self._group_loads = self._group_loads, {}
        loaded = {e.id: e for e in entries}
        by_group: dict[str, set[int]] = {}
        for id, group in loads.items():
            by_group.setdefault(group, set()).add(id)
        for group, wanted in by_group.items():
            dq = self._groups.get(group)
            if not dq:
                continue
            kept: list[Item] = []
            while dq and wanted:
                item = dq[0]
                del dq[0]
                id = item_id(item)
                if id in wanted and _cold(item):
                    wanted.discard(id)
                    fresh = loaded.get(id)
                    if fresh is None:
                        self.count -= 1  # deleted in storage meanwhile
                        self.bytes -= item & 0xFFFFFFFF if isinstance(item, int) else item.size
                        continue
                    fresh.deliver_at = 0.0
                    fresh.group = group
                    if id in self._expiring:
                        self._expiring[id] = fresh
                    self.budget.force(fresh.size)
                    kept.append(fresh)
                else:
                    kept.append(item)
            if isinstance(dq, deque):
                dq.extendleft(reversed(kept))
            else:
                dq[0:0] = kept
            self._drop_empty(group)

    def load_failed(self) -> None:
        """The load asked for failed; the next `pop_next` asks again."""
        self._group_loads.clear()
        super().load_failed()

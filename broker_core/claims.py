"""`SharedQueueState`: a queue's state when several nodes serve it from one database.

The database owns the pending order (`journal.SharedStorage`): a publish
only writes its `Insert`, a requeue or a dead letter only writes its op, and
the state's pending order holds just the messages this node *claimed* for
its consumers' credit, or published here while a consumer here had credit
to spare (written already claimed, `Insert.claimed`). `balance` asks for
claims (`take_claims`, answered by `claimed`) while messages may be ready
(`wake`), and releases claimed messages no consumer here can take. Counts
toward ``max_length`` and ``max_bytes`` are storage's (`counted`), plus
what this node changed since.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

import msgspec

from .journal import Drop, Insert, Release, Requeue, Trim
from .messages import Entry
from .queue import QueueState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .messages import QueueOptions
    from .pending import BodyBudget, Item

__all__ = ["MAX_CLAIM", "SharedQueueState"]

MAX_CLAIM = 1000
"""Most messages one claim from shared storage leases."""


class SharedQueueState(QueueState):
    """The state of one queue on shared storage: it claims, and storage keeps the rest.

    Arguments as `QueueState`'s.

    Attributes:
        stored_pending: pending messages in storage (every node's), as last
            counted plus this node's publishes and trims since.
        stored_bytes: their bytes, likewise.
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
        super().__init__(
            name,
            options,
            budget=budget,
            dedup_window_s=dedup_window_s,
            processed=processed,
            failed=failed,
        )
        self.stored_pending = 0
        self.stored_bytes = 0
        self._moved = (0, 0)
        self._want = True
        self._stored_ready = True
        """Whether storage may hold ready messages this node was told of (a publish here
        then goes behind them, to storage: `_claim_at_publish`)."""
        self._woken = 0
        self._woken_at_claim = 0
        self._claiming = False
        self._claims: list[int] = []
        self._wakes: list[float] = []

    def take_claims(self) -> int:
        """Return and clear how many messages to claim from shared storage (then `claimed`)."""
        out, self._claims = sum(self._claims), []
        return out

    # -- counts -----------------------------------------------------------------

    def held(self) -> tuple[int, int]:
        """Messages and bytes toward the limits: those claimed here and those in storage."""
        count, size = super().held()
        return count + self.stored_pending, size + self.stored_bytes

    def _move_stored(self, count: int, size: int) -> None:
        """Change the stored figures by this node's own publish or trim."""
        pending = max(0, self.stored_pending + count)
        size_now = max(0, self.stored_bytes + size)
        moved = self._moved
        self._moved = (
            moved[0] + pending - self.stored_pending,
            moved[1] + size_now - self.stored_bytes,
        )
        self.stored_pending, self.stored_bytes = pending, size_now

    def _unpublished(self, entries: Sequence[Entry]) -> None:
        # Those claimed as they were published are held here, not counted as stored.
        held = self.processing.keys() | self.pending.ids()
        stored = [entry for entry in entries if entry.id not in held]
        self._move_stored(-len(stored), -sum(entry.size for entry in stored))

    def count_mark(self) -> tuple[int, int]:
        """A mark to hand to `counted`: what this node has moved so far."""
        return self._moved

    def counted(self, pending: int, size: int, mark: tuple[int, int]) -> None:
        """Storage counted ``pending`` messages of ``size`` bytes, starting after ``mark``.

        What this node published or trimmed since the mark was taken may be
        missing from storage's answer: it stays on top of it.
        """
        moved = self._moved
        self.stored_pending = max(0, pending + moved[0] - mark[0])
        self.stored_bytes = max(0, size + moved[1] - mark[1])

    # -- where messages go --------------------------------------------------------

    def _place(self, entry: Entry, now: float) -> None:
        if self._claim_at_publish(entry, now):
            # Written claimed by this node (`Insert.claimed`) and delivered from
            # here, as on a single node: no NOTIFY and no claim round trip after
            # the commit. A crash before its delivery leaves a lease the other
            # nodes' reaper gives back, as for any claimed message.
            insert = self._ops[-1]
            assert type(insert) is Insert and insert.entry is entry, "placed after its Insert"
            self._ops[-1] = msgspec.structs.replace(insert, claimed=now + self.options.lease)
            entry.deliver_at = 0.0
            self.pending.append(entry)
            return
        # Every node claims it from storage; count it until counts are read again.
        self._move_stored(1, entry.size)

    def _claim_at_publish(self, entry: Entry, now: float) -> bool:
        """Whether a message published here is claimed here as it is written.

        Only when a consumer here has credit no claimed message will take,
        and storage holds nothing ready that this node was told of (no wake
        since its last claim came back short), so the message goes after
        none that waits there. The fallback poll's wake (`wake` with
        ``told=False``) claims without closing this path: it looks for what
        a lost notification would have told, which is rare, and closing the
        path every poll would send a few messages per second through
        storage. A message of a group, or
        of a single-active-consumer queue, and a delayed one take the shared
        path: the claim statement alone keeps their rules across nodes.
        """
        if (
            entry.group is not None
            or entry.deliver_at > now
            or self._stored_ready
            or self.paused_until > now
            or self.options.single_active_consumer
        ):
            return False
        # Credit beyond what the pending messages here will take; stops at the
        # first consumers that have it (usually the first), not after all of them.
        consumers = self.consumers
        spare = -self.pending.count
        for id in self._ready:
            spare += consumers[id].credit
            if spare > 0:
                return True
        return False

    def _make_room(self, count: int, size: int, limit: str, now: float) -> None:
        # The oldest messages are in storage: it drops them in this batch.
        options = self.options
        max_length, max_bytes = options.max_length, options.max_bytes
        held, held_bytes = self.held()
        drop = max(0, held + count - max_length) if max_length is not None else 0
        free = max(0, held_bytes + size - max_bytes) if max_bytes is not None else 0
        target = options.dead_letter_queue
        self._ops.append(Trim(self.name, drop, free, target if target != self.name else None))
        self._move_stored(-drop, -free)

    def adopt(self, item: Item, now: float) -> None:
        """A message moved here waits in storage for a claim, like any pending message there."""

    def _not_pending_for_retry(self, id: int) -> None:
        """Not claimed here: it waits in storage, which restores it."""

    def _requeue(self, entry: Entry, deliver_at: float, trigger: str = "nack") -> None:
        # Back to storage, where any node may claim it (once due, after a back-off).
        reason = entry.last_error if trigger == "nack" else None
        self._ops.append(
            Requeue(
                entry.id, entry.attempt, self.name, deliver_at, trigger, reason, entry.created_at
            )
        )

    def reschedule(
        self, id: int, deliver_at: float | None, priority: int | None, now: float
    ) -> bool:
        """A message claimed here goes back to storage, rescheduled there (any node claims it)."""
        item = self._take_waiting(id, "reschedule")
        if not isinstance(item, Entry):
            return False
        self._ops.append(Release(self.name, id, item.attempt))
        at = item.deliver_at if deliver_at is None else deliver_at
        self.reschedule_stored(id, at, item.priority if priority is None else priority, now)
        return True

    def _hand_over(self, target: str, item: Item) -> None:
        """Storage moved it to ``target``, where any node claims it."""

    def purge(self) -> int:
        """Delete the messages claimed here (storage deletes its own pending ones)."""
        for id in self.pending.ids():
            self._ops.append(Drop(id))
        return self.pending.clear()

    # -- claims -------------------------------------------------------------------

    def balance(self, waiting: int) -> None:
        """Claim what consumers' credit and ``waiting`` pulls need, release the rest.

        A claim is asked for (`take_claims`) only while ready messages may be
        in storage (`wake`) and no claim is on its way. Claimed messages no
        consumer here has credit for, with no pull waiting, go back to storage.
        """
        consumers = self.consumers
        credit = sum(consumers[id].credit for id in self._ready)
        if self.paused_until:
            # Paused (on any node: the pause is in the shared options): claim
            # nothing, and let go of what was claimed for delivery here.
            credit = waiting = 0
        pending = self.pending
        if not credit and not waiting and pending.count:
            for entry in pending.drain():
                self._ops.append(Release(self.name, entry.id, entry.attempt))
            return
        demand = min(credit + waiting - pending.count, MAX_CLAIM)
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
            self._want = self._stored_ready = False
        pending = self.pending
        for entry in entries:
            entry.deliver_at = 0.0
            pending.append_loaded(entry)

    @property
    def claiming(self) -> bool:
        """Whether a claim was asked for and not yet answered."""
        return self._claiming

    def claim_failed(self) -> None:
        """The claim asked for failed; the next `balance` asks again."""
        self._claiming = False

    def wake(self, at: float, now: float, told: bool = True) -> None:
        """Messages are ready in storage now, or will be at ``at``.

        ``told=False``: they may be (the fallback poll's look for a lost notification).
        """
        if at > now:
            heapq.heappush(self._wakes, at)
        else:
            self._want = True
            self._woken += 1
            if told:
                self._stored_ready = True

    # -- time -------------------------------------------------------------------

    def set_options(self, options: QueueOptions) -> None:
        """As `QueueState.set_options`; a pause lifted (on any node) claims again."""
        was_paused = self.paused_until
        super().set_options(options)
        if was_paused and not self.paused_until:
            self._want = self._stored_ready = True

    def tick(self, now: float) -> None:
        """As `QueueState.tick`, and the wakes due (delayed messages in storage)."""
        was_paused = self.paused_until
        super().tick(now)
        if was_paused and not self.paused_until:
            # Paused until now: what waits in storage may be claimed.
            self._want = self._stored_ready = True
        wakes = self._wakes
        while wakes and wakes[0] <= now:
            heapq.heappop(wakes)
            self._want = self._stored_ready = True
            self._woken += 1

    def next_deadline(self) -> float | None:
        """As `QueueState.next_deadline`, with the next wake."""
        deadline = super().next_deadline()
        if self._wakes and (deadline is None or self._wakes[0] < deadline):
            return self._wakes[0]
        return deadline

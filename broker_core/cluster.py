"""How a `Broker` stands toward its storage: alone (`Standalone`) or one node of a `Cluster`.

The broker hands these the parts of its work that differ between the two:
making message ids, building and restoring queue states, message counts,
and the messages that another node holds. `Standalone` owns its storage;
`Cluster` (on a `journal.SharedStorage`) follows what the other nodes do:
it wakes the queues when storage says messages are ready, follows queues
that other nodes create, change or delete, reads every node's message
counts, settles and touches by REST messages another node holds, and makes
ids from its node slot (`ids.NodeIds`).
"""

from __future__ import annotations

import asyncio
import random
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from loguru import logger

from .claims import SharedQueueState
from .errors import InvalidTransition
from .ids import NodeIds
from .journal import DeadLetter, Fail, QueueCounts, Requeue
from .messages import QueueEvent
from .queue import QueueState, give_up_reason
from .retry import requeue_delay_ms

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable

    from .actor import Claim
    from .broker import Broker
    from .journal import Change, Op, SharedStorage, Storage, StoredMessage, StoredQueue
    from .messages import Entry, QueueOptions

__all__ = ["MAX_MESSAGE_ID", "Cluster", "Standalone", "give_back_op"]

MAX_MESSAGE_ID = 2**63 - 1
"""Ids are 64-bit signed integers in storage: a client's larger id names no message."""
_COUNTS_EVERY_S = 1.0
"""How often a node on shared storage reads every queue's counts (limits, ``/metrics``)."""


def give_back_op(
    queue: str,
    options: QueueOptions,
    entry: Entry,
    requeue: bool,
    reason: str,
    now: float,
    delay_ms: int | None = None,
) -> Op:
    """The op that gives back a message held on another node (shared storage's REST nack)."""
    why = give_up_reason(options, entry.attempt, requeue, reason)
    if why is None:
        wait = requeue_delay_ms(options.retry, entry.attempt, "nack", random.random(), delay_ms)
        at = now + wait / 1000 if wait > 0 else 0.0
        return Requeue(entry.id, entry.attempt, queue, at, "nack", reason, entry.created_at)
    target = options.dead_letter_queue
    if target is not None and target != queue:
        return DeadLetter(entry.id, queue, target, why, entry.group is not None, entry.created_at)
    return Fail(queue, entry.id, why, now, entry.group is not None, entry.created_at)


class Standalone:
    """A broker that alone owns its storage: its actors hold every queue's pending order.

    Args:
        broker: the broker served.
        storage: its storage.
    """

    claim: Claim | None = None
    """What a queue's actor claims messages with (shared storage only)."""

    def __init__(self, broker: Broker, storage: Storage) -> None:
        self._broker = broker
        self._storage = storage
        self._last_id = 0
        self.ids: Callable[[], int] = self._allocate_id
        """Makes the id of each new message."""

    def _allocate_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def before_open(self) -> None:
        """Called before storage opens."""

    async def opened(self, last_id: int) -> None:
        """Storage opened; ``last_id`` is the highest message id it holds."""
        self._last_id = last_id

    state_class: type[QueueState] = QueueState
    """The queue state's algorithm: single node here, `SharedQueueState` in a cluster."""

    def new_state(
        self, name: str, options: QueueOptions, processed: int = 0, failed: int = 0
    ) -> QueueState:
        """The state of a queue created or loaded on this node."""
        broker = self._broker
        return self.state_class(
            name,
            options,
            budget=broker.budget,
            dedup_window_s=broker.dedup_window_s,
            processed=processed,
            failed=failed,
        )

    async def restore(self, state: QueueState, now: float) -> None:
        """Rebuild a loaded queue's state from storage at start (before its actor runs)."""
        replayed = await self._storage.replay(state.name, now, self._broker.dedup_window_s)
        state.restore(
            replayed.cold,
            replayed.delayed,
            replayed.dedup,
            replayed.grouped,
            replayed.group_names,
        )

    async def started(self) -> None:
        """Every queue is loaded and its actor runs."""

    async def close(self) -> None:
        """Stop background work (before the actors stop)."""

    def counts(self, state: QueueState) -> QueueCounts:
        """A queue's message counts, as `Broker.info` shows them."""
        return QueueCounts(
            pending=state.pending_count + state.delayed_count,
            delayed=state.delayed_count,
            processing=len(state.processing),
            processed=state.processed,
            failed=state.failed,
        )

    async def sync_counts(self, names: Iterable[str] | None = None) -> None:
        """Refresh the counts of ``names`` (all) from storage; the actors have them here."""

    def forget(self, name: str) -> None:
        """A queue was deleted."""

    async def purge_ready(self, name: str) -> int:
        """Delete the pending messages no actor here holds; return how many."""
        return 0

    def held_elsewhere(self, id: int) -> bool:
        """Whether message ``id``, in flight on no actor here, may be held by another node."""
        return False

    async def settle_elsewhere(
        self,
        ids: list[int],
        allowed: Callable[[str], bool] | None,
        foreign: Callable[[StoredMessage, QueueOptions, float], Op],
        errors: dict[str, str],
    ) -> list[int]:
        """Settle messages another node holds; return those settled (see `Cluster`)."""
        raise AssertionError("a standalone broker holds every message it may settle")

    async def touch_elsewhere(
        self, id: int, lease: float, allowed: Callable[[str], bool] | None
    ) -> float | None:
        """Extend the lease of a message another node holds; its deadline, or ``None``."""
        return None


class Cluster(Standalone):
    """This node of several on one `SharedStorage`: the database owns the pending order."""

    state_class = SharedQueueState

    def __init__(self, broker: Broker, storage: SharedStorage) -> None:
        super().__init__(broker, storage)
        self._shared = storage
        self.claim = storage.claim
        self._counts: dict[str, QueueCounts] = {}
        self._counting = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ----------------------------------------------------------------

    def before_open(self) -> None:
        """Listen to changes: one told while the queues load is not missed."""
        self._shared.watch(self._on_change)

    async def opened(self, last_id: int) -> None:
        """Ids go on from ``last_id``, made under this node's slot."""
        self.ids = NodeIds(self._shared.node_slot, last_id, self._broker.clock)

    async def restore(self, state: QueueState, now: float) -> None:
        """Only the dedup window: the pending order stays in storage."""
        since = now - self._broker.dedup_window_s
        state.restore((), (), await self._shared.recent_dedup(state.name, since))

    async def started(self) -> None:
        """Read the counts, then again every second in the background."""
        await self.sync_counts()
        self._spawn(self._count_loop())

    async def close(self) -> None:
        """Cancel the background reads."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with suppress(asyncio.CancelledError):
                await task

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- following other nodes ------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        """What storage tells of changes made by any node."""
        broker = self._broker
        match change.kind:
            case "messages":
                actor = broker.find_actor(change.name)
                if actor is not None:
                    at = change.at
                    actor.cast(lambda state, now: _wake(state, at, now))
            case "resync":
                # Nobody told of messages: look, in case a notification was lost.
                for actor in broker.actors():
                    actor.cast(lambda state, now: _wake(state, 0.0, now, told=False))
            case "reconnected":
                # Notifications may have been lost while the listener was away.
                for actor in broker.actors():
                    actor.cast(lambda state, now: _wake(state, 0.0, now))
                self._spawn(self._follow_queues())
            case "queue":
                self._spawn(self._follow_queues([change.name]))
            case "touch":
                queue = broker.queue_of(change.id)
                actor = broker.find_actor(queue) if queue is not None else None
                if actor is not None:
                    id, deadline = change.id, change.at
                    actor.cast(lambda state, now: state.touch_if_held(id, deadline, now))
            case "dedup":
                actor = broker.find_actor(change.name)
                if actor is not None:
                    key, id, at = change.key, change.id, change.at
                    actor.cast(lambda state, now: state.remember_dedup(key, id, at, now))
            case "result":
                broker.results.wake([change.id])
            case "rejoined":
                # A new slot: ids go on from the last one made, under it.
                self.ids = NodeIds(self._shared.node_slot, self.ids(), broker.clock)

    async def _follow_queues(self, names: Iterable[str] | None = None) -> None:
        """Make this node's actors of ``names`` (all) match storage (other nodes changed them)."""
        try:
            stored = {q.name: q for q in await self._shared.load_queues()}
        except Exception as exc:
            logger.opt(exception=exc).warning("reading changed queues failed")
            return
        known = self._broker.queue_names()
        for name in names if names is not None else set(stored) | set(known):
            await self._follow_queue(name, stored.get(name))

    async def _follow_queue(self, name: str, stored: StoredQueue | None) -> None:
        broker = self._broker
        actor = broker.find_actor(name)
        if stored is None:
            if actor is not None:
                await broker.drop_actor(actor)
                logger.info("queue deleted by another node", queue=name)
            return
        if actor is None:
            state = self.new_state(name, stored.options)
            broker.add_actor(state, stored.created_at, stored.updated_at)
            broker.emit(QueueEvent(type="queue_created", queue=name, at=broker.clock()))
            return
        if broker.note_update(name, stored.updated_at, stored.options):
            options = stored.options
            actor.cast(lambda state, _: state.set_options(options))

    # -- counts -------------------------------------------------------------------

    async def _count_loop(self) -> None:
        while True:
            await asyncio.sleep(_COUNTS_EVERY_S)
            try:
                await self.sync_counts()
            except Exception as exc:
                logger.opt(exception=exc).warning("reading message counts failed")

    def counts(self, state: QueueState) -> QueueCounts:
        """Every node's counts, as last read from storage."""
        return self._counts.get(state.name, QueueCounts())

    async def sync_counts(self, names: Iterable[str] | None = None) -> None:
        """Read message counts from storage for `Broker.info` and the queues' limits.

        The counts are every node's; a node reads them in the background
        every second, and the transports call this before answering a
        request that shows counts.
        """
        broker = self._broker
        wanted = list(names) if names is not None else broker.queue_names()
        async with self._counting:
            # A queue's own publishes (and drop_head trims) move its figures while
            # storage counts: the state keeps those moves on top of what storage answers.
            marks = {}
            for name in wanted:
                actor = broker.find_actor(name)
                if actor is not None:
                    state = actor.state
                    assert isinstance(state, SharedQueueState), "a cluster's states are shared"
                    marks[name] = state.count_mark()
            counts = await self._shared.counts(wanted)
            self._counts.update(counts)
            told = []
            for name, counted in counts.items():
                actor = broker.find_actor(name)
                mark = marks.get(name)
                if actor is None or mark is None:
                    continue
                told.append(
                    actor.call(
                        lambda state, _, c=counted, m=mark: _counted(state, c, m)  # type: ignore[misc]
                    )
                )
            for future in told:
                with suppress(Exception):
                    await future

    def forget(self, name: str) -> None:
        """Drop a deleted queue's counts."""
        self._counts.pop(name, None)

    # -- messages held by other nodes -------------------------------------------------

    async def purge_ready(self, name: str) -> int:
        """Delete the pending messages in storage now; return how many."""
        return await self._shared.purge_ready(name)

    def held_elsewhere(self, id: int) -> bool:
        """Any valid id in flight on no actor here may be another node's."""
        return 0 < id <= MAX_MESSAGE_ID

    async def settle_elsewhere(
        self,
        ids: list[int],
        allowed: Callable[[str], bool] | None,
        foreign: Callable[[StoredMessage, QueueOptions, float], Op],
        errors: dict[str, str],
    ) -> list[int]:
        """Settle messages that no actor here holds: another node's leases."""
        broker = self._broker
        now = broker.clock()

        def outcome(held: StoredMessage) -> Op | None:
            actor = broker.find_actor(held.queue)
            if actor is None or (allowed is not None and not allowed(held.queue)):
                return None
            return foreign(held, actor.state.options, now)

        done = await self._shared.settle_elsewhere(
            ids, outcome, lambda ops: broker.results.record("", ops, now)
        )
        settled = [id for _, id in done]
        for id in set(ids).difference(settled):
            errors[str(id)] = str(InvalidTransition(id, "settle", "not processing"))
        return settled

    async def touch_elsewhere(
        self, id: int, lease: float, allowed: Callable[[str], bool] | None
    ) -> float | None:
        """Storage records the deadline and tells the node that holds the message."""
        deadline = self._broker.clock() + lease
        held = await self._shared.touch_elsewhere(id, deadline, allowed)
        return deadline if held else None


def _wake(state: QueueState, at: float, now: float, told: bool = True) -> None:
    assert isinstance(state, SharedQueueState), "a cluster's states are shared"
    state.wake(at, now, told)


def _counted(state: QueueState, counted: QueueCounts, mark: tuple[int, int]) -> None:
    assert isinstance(state, SharedQueueState), "a cluster's states are shared"
    state.counted(counted.pending, counted.pending_bytes, mark)

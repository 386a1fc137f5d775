"""`Broker`: the registry of queue actors and the one entry point transports call.

It creates, finds, deletes and shuts down `QueueActor`s, allocates message
ids, routes dead letters between queues, indexes in-flight messages by id
(so ``POST /messages/{id}/ack`` needs no queue name), and fans journal
operations out as `QueueEvent`s to listeners. It knows nothing of HTTP.

On a `SharedStorage` (several nodes, one database) the queues' states run
in shared mode: the broker wakes them when storage says messages are ready,
follows queues that other nodes create, change or delete, settles by REST
messages that another node holds, reads message counts from storage, and
makes ids from its node slot (`ids.NodeIds`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import msgspec
from loguru import logger

from .actor import QueueActor, QueueDeleted
from .errors import (
    BrokerError,
    InvalidTransition,
    MessageNotFound,
    QueueExists,
    QueueInUse,
    QueueLimitReached,
    QueueNotFound,
    Unavailable,
)
from .ids import NodeIds
from .journal import (
    AckOp,
    DeadLetter,
    DeleteQueue,
    DeliverOp,
    Drop,
    Fail,
    Insert,
    PutQueue,
    QueueCounts,
    Requeue,
    Restore,
)
from .messages import (
    ConsumerInfo,
    CreateQueueRequest,
    MessagesPage,
    MessageView,
    PublishResult,
    QueueEvent,
    QueueInfo,
    QueueOptions,
    SettleResult,
    check_queue_name,
    from_timestamp,
)
from .queue import BodyBudget, QueueState, give_back_op
from .types import MessageStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable, Sequence

    from .actor import DeliverySink
    from .journal import Change, Op, SharedStorage, Storage, StoredMessage, StoredQueue
    from .messages import PublishRequest, UpdateQueueRequest
    from .queue import Item, Published, SettleOutcome

__all__ = ["Broker", "EventListener"]

EventListener: TypeAlias = "Callable[[QueueEvent], None]"
"""A function called with every `QueueEvent`; it must not block."""

T = TypeVar("T")

_OPTION_FIELDS = QueueOptions.__struct_fields__
_MAX_MESSAGE_ID = 2**63 - 1
"""Ids are 64-bit signed integers in storage: a client's larger id names no message."""
_COUNTS_EVERY_S = 1.0
"""How often a node on shared storage reads every queue's counts (limits, ``/metrics``)."""


class _QueueMeta:
    __slots__ = ("created_at", "updated_at")

    def __init__(self, created_at: float, updated_at: float) -> None:
        self.created_at = created_at
        self.updated_at = updated_at


class Broker:
    """All queues of one broker process, over one `Storage`.

    Args:
        storage: the storage backend (opened and closed by the broker).
        max_queues: how many queues may exist.
        dedup_window_s: how long a ``dedup_id`` is remembered per queue.
        body_cache_bytes: bytes of pending bodies kept in memory across queues.
        default_lease_s: the lease of a queue created without one.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        max_queues: int = 10_000,
        dedup_window_s: float = 300.0,
        body_cache_bytes: int = 64 << 20,
        default_lease_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.default_lease_s = default_lease_s
        self.max_queues = max_queues
        self.dedup_window_s = dedup_window_s
        self.budget = BodyBudget(body_cache_bytes)
        self._clock = clock
        self._actors: dict[str, QueueActor] = {}
        self._meta: dict[str, _QueueMeta] = {}
        self._inflight: dict[int, str] = {}
        self._listeners: set[Callable[[QueueEvent], None]] = set()
        self._consumer_ids = itertools.count(1)
        self._next_id = 0
        self._retrying: set[int] = set()
        self.clean_start = True
        self.started_at = clock()
        self.shared = storage.shared
        self._ids: Callable[[], int] = self._allocate_id
        self._counts: dict[str, QueueCounts] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._counting = asyncio.Lock()

    # -- lifecycle --------------------------------------------------------------

    @property
    def _shared_storage(self) -> SharedStorage:
        assert self.shared, "shared storage only"
        return self.storage  # type: ignore[return-value]

    async def start(self) -> None:
        """Open storage and rebuild every queue's actor from it."""
        if self.shared:
            # Before open: a change told while the queues load is not missed.
            self._shared_storage.watch(self._on_change)
        self.clean_start = await self.storage.open()
        self._next_id = await self.storage.last_message_id()
        if self.shared:
            self._ids = NodeIds(self._shared_storage.node_slot, self._next_id, self._clock)
        now = self._clock()
        for stored in await self.storage.load_queues():
            state = self._new_state(stored.name, stored.options, stored.processed, stored.failed)
            if self.shared:
                since = now - self.dedup_window_s
                state.restore((), (), await self._shared_storage.recent_dedup(stored.name, since))
            else:
                replayed = await self.storage.replay(stored.name, now, self.dedup_window_s)
                state.restore(replayed.cold, replayed.delayed, replayed.dedup)
            self._meta[stored.name] = _QueueMeta(stored.created_at, stored.updated_at)
            self._start_actor(state)
        if self.shared:
            await self.sync_counts()
            self._spawn(self._count_loop())
        logger.info(
            "broker started",
            queues=len(self._actors),
            clean=self.clean_start,
        )

    async def close(self) -> None:
        """Stop every actor (finishing queued work), then flush and close storage."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with suppress(asyncio.CancelledError):
                await task
        actors = list(self._actors.values())
        await asyncio.gather(*(actor.stop() for actor in actors))
        await self.storage.close()
        logger.info("broker stopped")

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _new_state(
        self, name: str, options: QueueOptions, processed: int = 0, failed: int = 0
    ) -> QueueState:
        return QueueState(
            name,
            options,
            budget=self.budget,
            dedup_window_s=self.dedup_window_s,
            processed=processed,
            failed=failed,
            shared=self.shared,
        )

    def _start_actor(self, state: QueueState) -> QueueActor:
        claim = self._shared_storage.claim if self.shared else None
        actor = QueueActor(state, self.storage, self, clock=self._clock, claim=claim)
        self._actors[state.name] = actor
        actor.start()
        return actor

    def _allocate_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- shared storage -------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_change(self, change: Change) -> None:
        """What storage tells of changes made by any node (shared storage)."""
        match change.kind:
            case "messages":
                actor = self._actors.get(change.name)
                if actor is not None:
                    at = change.at
                    actor.cast(lambda state, now: state.wake(at, now))
            case "resync":
                for actor in self._actors.values():
                    actor.cast(lambda state, now: state.wake(0.0, now))
            case "reconnected":
                for actor in self._actors.values():
                    actor.cast(lambda state, now: state.wake(0.0, now))
                self._spawn(self._follow_queues())
            case "queue":
                self._spawn(self._follow_queues([change.name]))
            case "touch":
                queue = self._inflight.get(change.id)
                actor = self._actors.get(queue) if queue is not None else None
                if actor is not None:
                    id, deadline = change.id, change.at
                    actor.cast(lambda state, now: _touch_if_held(state, id, deadline, now))
            case "dedup":
                actor = self._actors.get(change.name)
                if actor is not None:
                    key, id, at = change.key, change.id, change.at
                    actor.cast(lambda state, now: state.remember_dedup(key, id, at, now))
            case "rejoined":
                # A new slot: ids go on from the last one made, under it.
                self._ids = NodeIds(self._shared_storage.node_slot, self._ids(), self._clock)

    async def _follow_queues(self, names: Iterable[str] | None = None) -> None:
        """Make this node's actors of ``names`` (all) match storage (other nodes changed them)."""
        try:
            stored = {q.name: q for q in await self.storage.load_queues()}
        except Exception as exc:
            logger.opt(exception=exc).warning("reading changed queues failed")
            return
        for name in names if names is not None else set(stored) | set(self._actors):
            await self._follow_queue(name, stored.get(name))

    async def _follow_queue(self, name: str, stored: StoredQueue | None) -> None:
        actor = self._actors.get(name)
        if stored is None:
            if actor is not None:
                await self._drop_actor(actor)
                logger.info("queue deleted by another node", queue=name)
            return
        if actor is None:
            self._meta[name] = _QueueMeta(stored.created_at, stored.updated_at)
            self._start_actor(self._new_state(name, stored.options))
            self._emit(QueueEvent(type="queue_created", queue=name, at=self._clock()))
            return
        meta = self._meta[name]
        if stored.updated_at != meta.updated_at or stored.options != actor.state.options:
            meta.updated_at = stored.updated_at
            options = stored.options
            actor.cast(lambda state, _: state.set_options(options))

    async def _count_loop(self) -> None:
        while True:
            await asyncio.sleep(_COUNTS_EVERY_S)
            try:
                await self.sync_counts()
            except Exception as exc:
                logger.opt(exception=exc).warning("reading message counts failed")

    async def sync_counts(self, names: Iterable[str] | None = None) -> None:
        """Read message counts from shared storage for `info` and `totals` (no-op otherwise).

        On shared storage the counts are every node's; a node reads them
        in the background every second, and the transports call this
        before answering a request that shows counts.
        """
        if not self.shared:
            return
        wanted = list(names) if names is not None else list(self._actors)
        async with self._counting:
            # A queue's own publishes (and drop_head trims) move its figures while
            # storage counts: keep those moves on top of what storage answers.
            before = {
                name: (actor.state.stored_pending, actor.state.stored_bytes)
                for name in wanted
                if (actor := self._actors.get(name)) is not None
            }
            counts = await self._shared_storage.counts(wanted)
            self._counts.update(counts)
            for name, counted in counts.items():
                actor = self._actors.get(name)
                if actor is None or name not in before:
                    continue
                state = actor.state
                pending, size = before[name]
                state.stored_pending = max(0, counted.pending + state.stored_pending - pending)
                state.stored_bytes = max(0, counted.pending_bytes + state.stored_bytes - size)

    # -- hooks the actors call ----------------------------------------------------

    def dead_letter(self, target: str, items: list[Item]) -> None:
        """Hand dead-lettered messages to ``target`` (validated to exist when configured)."""
        actor = self._actors.get(target)
        if actor is None:  # pragma: no cover - deletion of a DLQ in use is refused
            logger.error("dead-letter queue vanished", queue=target, count=len(items))
            return

        def adopt(state: QueueState, now: float) -> None:
            for item in items:
                state.adopt(item, now)

        actor.cast(adopt)

    def ops_written(self, queue: str, ops: Sequence[Op]) -> None:
        """Keep the in-flight index and feed event listeners."""
        inflight = self._inflight
        listeners = self._listeners
        for op in ops:
            if type(op) is DeliverOp:
                inflight[op.id] = queue
            elif type(op) in (AckOp, Requeue, Fail, DeadLetter, Drop):
                inflight.pop(op.id, None)  # type: ignore[union-attr]
        if listeners:
            now = self._clock()
            for op in ops:
                event = _event_of(queue, op, now)
                if event is not None:
                    self._emit(event)

    # -- events -------------------------------------------------------------------

    def add_listener(self, listener: Callable[[QueueEvent], None]) -> None:
        """Call ``listener`` for every `QueueEvent` (it must not block)."""
        self._listeners.add(listener)

    def remove_listener(self, listener: Callable[[QueueEvent], None]) -> None:
        """Stop calling ``listener``."""
        self._listeners.discard(listener)

    def _emit(self, event: QueueEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # pragma: no cover - listeners are ours
                logger.opt(exception=exc).error("event listener failed")

    # -- queues -------------------------------------------------------------------

    def actor(self, name: str) -> QueueActor:
        """The actor of queue ``name``; raise `QueueNotFound` if there is none."""
        actor = self._actors.get(name)
        if actor is None:
            raise QueueNotFound(name)
        return actor

    def queue_names(self) -> list[str]:
        """Names of all queues, sorted."""
        return sorted(self._actors)

    def _queue_counts(self, state: QueueState) -> QueueCounts:
        if self.shared:
            return self._counts.get(state.name, QueueCounts())
        return QueueCounts(
            pending=state.pending_count + state.delayed_count,
            delayed=state.delayed_count,
            processing=len(state.processing),
            processed=state.processed,
            failed=state.failed,
        )

    def info(self, name: str) -> QueueInfo:
        """Counts and options of one queue (from its actor, or as last read from shared storage)."""
        state = self.actor(name).state
        meta = self._meta[name]
        counts = self._queue_counts(state)
        return QueueInfo(
            name=name,
            created_at=from_timestamp(meta.created_at),
            updated_at=from_timestamp(meta.updated_at),
            pending=counts.pending,
            processing=counts.processing,
            processed=counts.processed,
            failed=counts.failed,
            delayed=counts.delayed,
            consumers=len(state.consumers),
            published_total=state.published_total,
            delivered_total=state.delivered_total,
            acked_total=state.acked_total,
            nacked_total=state.nacked_total,
            **msgspec.structs.asdict(state.options),
        )

    def infos(self, names: Iterable[str] | None = None) -> list[QueueInfo]:
        """`info` of each queue (all by default)."""
        return [self.info(name) for name in (names if names is not None else self.queue_names())]

    def totals(self, names: Iterable[str] | None = None) -> dict[str, int]:
        """Message counts over some queues (all by default), as `info` counts them."""
        pending = processing = processed = failed = 0
        actors = (
            self._actors.values()
            if names is None
            else [self._actors[n] for n in names if n in self._actors]
        )
        for actor in actors:
            counts = self._queue_counts(actor.state)
            pending += counts.pending
            processing += counts.processing
            processed += counts.processed
            failed += counts.failed
        return {
            "pending": pending,
            "processing": processing,
            "processed": processed,
            "failed": failed,
            "total": pending + processing + processed + failed,
        }

    def _check_dead_letter_target(self, name: str, options: QueueOptions) -> None:
        target = options.dead_letter_queue
        if target is not None and target != name and target not in self._actors:
            raise QueueNotFound(target)

    async def create_queue(self, request: CreateQueueRequest) -> QueueInfo:
        """Create a queue; raise `QueueExists` or `QueueLimitReached`."""
        name = check_queue_name(request.name)
        if name in self._actors:
            raise QueueExists(name)
        if len(self._actors) >= self.max_queues:
            raise QueueLimitReached(self.max_queues)
        fields = {f: getattr(request, f) for f in _OPTION_FIELDS}
        if fields["lease"] is None:
            fields["lease"] = self.default_lease_s
        options = QueueOptions(**fields)
        self._check_dead_letter_target(name, options)
        now = self._clock()
        self._meta[name] = _QueueMeta(now, now)
        self._start_actor(self._new_state(name, options))
        await self.storage.write([PutQueue(name, options, now, now)])
        self._emit(QueueEvent(type="queue_created", queue=name, at=now))
        logger.info("queue created", queue=name)
        return self.info(name)

    async def update_queue(self, name: str, request: UpdateQueueRequest) -> QueueInfo:
        """Change a queue's options; the actor applies them from its next turn."""
        actor = self.actor(name)
        options = request.apply(actor.state.options)
        self._check_dead_letter_target(name, options)
        meta = self._meta[name]
        meta.updated_at = now = self._clock()
        await actor.call(lambda state, _: state.set_options(options))
        await self.storage.write([PutQueue(name, options, meta.created_at, now)])
        return self.info(name)

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its messages; its consumers' sinks get no more deliveries.

        Raises:
            QueueInUse: the queue is another queue's dead-letter queue.
        """
        actor = self.actor(name)
        for other in self._actors.values():
            if other is not actor and other.state.options.dead_letter_queue == name:
                raise QueueInUse(name, other.name)
        await self._drop_actor(actor)
        await self.storage.write([DeleteQueue(name)])
        logger.info("queue deleted", queue=name)

    async def _drop_actor(self, actor: QueueActor) -> None:
        """Stop a deleted queue's actor: its calls fail, its consumers are closed."""
        name = actor.name
        del self._actors[name]
        self._meta.pop(name, None)
        self._counts.pop(name, None)
        await actor.stop(QueueDeleted(name))
        for id in list(actor.state.processing):
            self._inflight.pop(id, None)
        actor.state.purge()
        actor.state.take_ops()
        self._emit(QueueEvent(type="queue_deleted", queue=name, at=self._clock()))

    async def purge(self, name: str) -> int:
        """Delete the pending messages of a queue; return how many went."""
        count = await self.actor(name).call(lambda state, _: state.purge(), durable=True)
        if self.shared:
            count += await self._shared_storage.purge_ready(name)
        self._emit(QueueEvent(type="queue_purged", queue=name, at=self._clock()))
        return count

    # -- publish ------------------------------------------------------------------

    def publish_nowait(
        self, name: str, requests: Sequence[PublishRequest]
    ) -> asyncio.Future[list[Published]]:
        """Queue a publish without awaiting it (pipelining transports).

        The future resolves once the batch holding the messages committed.

        Raises:
            QueueNotFound: no such queue.
            Unavailable: storage refuses writes now; nothing was enqueued.
        """
        return self._publish_call(name, lambda state, now: state.publish(requests, now, self._ids))

    def publish_each_nowait(
        self, name: str, requests: Sequence[PublishRequest]
    ) -> asyncio.Future[list[Published | BrokerError]]:
        """Queue publishes that succeed or fail one by one, in order, without awaiting them.

        For a pipelining transport's frames: one mailbox entry and one
        future for all of them, where `publish_nowait` per frame would cost
        one of each per message. Unlike a batch, each request is published
        on its own: a full queue refuses those that no longer fit (their
        outcome is the error), not the others. The future resolves once the
        batch holding them committed.

        Raises: as `publish_nowait`.
        """

        def publish_each(state: QueueState, now: float) -> list[Published | BrokerError]:
            outcomes: list[Published | BrokerError] = []
            for request in requests:
                try:
                    outcomes += state.publish((request,), now, self._ids)
                except BrokerError as exc:
                    outcomes.append(exc)
            return outcomes

        return self._publish_call(name, publish_each)

    def _publish_call(
        self, name: str, command: Callable[[QueueState, float], T]
    ) -> asyncio.Future[T]:
        """Run a publishing ``command`` on the queue's actor; its future resolves once committed."""
        degraded = self.storage.degraded
        if degraded is not None:
            raise Unavailable(degraded)
        return self.actor(name).call(command, durable=True)

    async def publish(self, name: str, requests: Sequence[PublishRequest]) -> list[PublishResult]:
        """Publish messages to one queue; return once their batch has committed."""
        published = await self.publish_nowait(name, requests)
        return [
            PublishResult(
                message_id=p.id,
                queue=name,
                created_at=from_timestamp(p.created_at),
                duplicate=p.duplicate,
            )
            for p in published
        ]

    async def publish_fanout(
        self, names: Sequence[str], request: PublishRequest
    ) -> list[PublishResult]:
        """Publish one message to several queues in one journal batch (all or none)."""
        actors = [self.actor(name) for name in dict.fromkeys(names)]
        degraded = self.storage.degraded
        if degraded is not None:
            raise Unavailable(degraded)
        for actor in actors:
            actor.state.check_room(1, len(request.content))
        commits = []
        results = []
        for actor in actors:
            published, commit = actor.apply_now(
                lambda state, now: state.publish([request], now, self._ids)
            )
            if commit is not None:
                commits.append(commit)
            p = published[0]
            results.append(
                PublishResult(
                    message_id=p.id,
                    queue=actor.name,
                    created_at=from_timestamp(p.created_at),
                    duplicate=p.duplicate,
                )
            )
        for commit in dict.fromkeys(commits):
            await commit
        return results

    # -- consume and settle -------------------------------------------------------

    async def pull(
        self, name: str, max_count: int, wait: float, lease: float | None
    ) -> list[MessageView]:
        """Lease up to ``max_count`` messages of a queue, long-polling up to ``wait`` seconds."""
        actor = self.actor(name)
        entries = await actor.pull(max_count, lease, wait)
        return [entry.view(name, "processing") for entry in entries]

    def queue_of(self, message_id: int) -> str | None:
        """The queue of an in-flight (processing) message, else ``None``."""
        return self._inflight.get(message_id)

    async def ack(
        self, ids: Sequence[int], *, allowed: Callable[[str], bool] | None = None
    ) -> SettleResult:
        """Ack in-flight messages by id (any queue); ``allowed`` filters by queue name."""
        return await self._settle(
            ids,
            allowed,
            lambda state, group, now: state.ack(group, now),
            lambda held, _, now: AckOp(held.queue, held.entry.id, now),
        )

    async def nack(
        self,
        ids: Sequence[int],
        *,
        requeue: bool = True,
        reason: str | None = None,
        allowed: Callable[[str], bool] | None = None,
    ) -> SettleResult:
        """Nack in-flight messages by id: requeue them or dead-letter them."""
        return await self._settle(
            ids,
            allowed,
            lambda state, group, now: state.nack(group, now, requeue=requeue, reason=reason),
            lambda held, options, now: give_back_op(
                held.queue, options, held.entry, requeue, reason or "rejected", now
            ),
        )

    async def _settle(
        self,
        ids: Sequence[int],
        allowed: Callable[[str], bool] | None,
        settle: Callable[[QueueState, list[int], float], SettleOutcome],
        foreign: Callable[[StoredMessage, QueueOptions, float], Op],
    ) -> SettleResult:
        groups: dict[str, list[int]] = {}
        errors: dict[str, str] = {}
        elsewhere: list[int] = []
        for id in dict.fromkeys(ids):
            queue = self._inflight.get(id)
            if queue is None and self.shared and 0 < id <= _MAX_MESSAGE_ID:
                elsewhere.append(id)
                continue
            if queue is None or (allowed is not None and not allowed(queue)):
                errors[str(id)] = str(InvalidTransition(id, "settle", "not processing"))
                continue
            groups.setdefault(queue, []).append(id)
        settled: list[int] = []
        if elsewhere:
            settled.extend(await self._settle_elsewhere(elsewhere, allowed, foreign, errors))
        for queue, group in groups.items():
            actor = self._actors.get(queue)
            if actor is None:
                errors.update({str(id): str(MessageNotFound(id)) for id in group})
                continue
            outcome = await actor.call(lambda state, now, g=group: settle(state, g, now))  # type: ignore[misc]
            settled.extend(outcome.settled)
            errors.update({str(id): str(exc) for id, exc in outcome.errors.items()})
        return SettleResult(settled=settled, errors=errors)

    async def _settle_elsewhere(
        self,
        ids: list[int],
        allowed: Callable[[str], bool] | None,
        foreign: Callable[[StoredMessage, QueueOptions, float], Op],
        errors: dict[str, str],
    ) -> list[int]:
        """Settle messages that no actor here holds: another node's leases (shared storage)."""
        now = self._clock()

        def outcome(held: StoredMessage) -> Op | None:
            actor = self._actors.get(held.queue)
            if actor is None or (allowed is not None and not allowed(held.queue)):
                return None
            return foreign(held, actor.state.options, now)

        done = await self._shared_storage.settle_elsewhere(ids, outcome)
        settled = [id for _, id in done]
        for id in set(ids).difference(settled):
            errors[str(id)] = str(InvalidTransition(id, "settle", "not processing"))
        return settled

    async def touch(
        self, id: int, lease: float, *, allowed: Callable[[str], bool] | None = None
    ) -> float:
        """Extend the lease of an in-flight message; return the new deadline.

        On shared storage a message another node holds is extended there:
        storage records the deadline and tells that node.
        """
        queue = self._inflight.get(id)
        if queue is None and self.shared and 0 < id <= _MAX_MESSAGE_ID:
            deadline = self._clock() + lease
            held = await self._shared_storage.touch_elsewhere(id, deadline, allowed)
            if held:
                return deadline
        if queue is None or (allowed is not None and not allowed(queue)):
            raise InvalidTransition(id, "touch", "not processing")
        return await self.actor(queue).call(lambda state, now: state.touch(id, lease, now))

    # -- push consumers -------------------------------------------------------------

    async def subscribe(
        self,
        name: str,
        prefetch: int,
        sink: DeliverySink,
        on_close: Callable[[], object] | None = None,
        label: str = "",
    ) -> int:
        """Register a push consumer on a queue; return its consumer id.

        ``on_close`` is called when the queue is deleted under the consumer;
        ``label`` says who it is in `consumers` (e.g. ``"ws alice 10.0.0.7"``).
        """
        actor = self.actor(name)
        consumer_id = next(self._consumer_ids)
        await actor.add_consumer(consumer_id, prefetch, sink, on_close, label)
        return consumer_id

    async def unsubscribe(self, name: str, consumer_id: int) -> int:
        """Remove a push consumer; what it held is requeued (redelivered). Return how many."""
        actor = self._actors.get(name)
        if actor is None:
            return 0
        with suppress(QueueDeleted):
            return await actor.remove_consumer(consumer_id)
        return 0

    async def consumer_ack(self, name: str, consumer_id: int, ids: Sequence[int]) -> SettleOutcome:
        """Ack messages a push consumer holds (a foreign id is an error, not an ack)."""
        return await self.actor(name).call(
            lambda state, now: state.ack(ids, now, consumer_id=consumer_id)
        )

    async def consumer_nack(
        self,
        name: str,
        consumer_id: int,
        ids: Sequence[int],
        requeue: bool,
        reason: str | None = None,
    ) -> SettleOutcome:
        """Nack messages a push consumer holds."""
        return await self.actor(name).call(
            lambda state, now: state.nack(
                ids, now, requeue=requeue, reason=reason, consumer_id=consumer_id
            )
        )

    def consumers(self, names: Iterable[str] | None = None) -> list[ConsumerInfo]:
        """The push consumers of some queues (all by default), with what they hold."""
        now = self._clock()
        out = []
        for name in names if names is not None else self.queue_names():
            actor = self._actors.get(name)
            if actor is None:
                continue
            state = actor.state
            for consumer in state.consumers.values():
                oldest = min(
                    (state.processing[id].delivered_at for id in consumer.held), default=None
                )
                out.append(
                    ConsumerInfo(
                        queue=name,
                        consumer_id=consumer.id,
                        label=consumer.label,
                        prefetch=consumer.prefetch,
                        unacked=len(consumer.held),
                        connected_at=from_timestamp(consumer.since),
                        oldest_lease_held_s=None if oldest is None else round(now - oldest, 3),
                    )
                )
        return out

    # -- browse and retry -------------------------------------------------------------

    async def browse(
        self, name: str, status: MessageStatus | None, limit: int, cursor: int | None
    ) -> MessagesPage:
        """A page of a queue's messages by ascending id."""
        self.actor(name)
        if cursor is not None:
            cursor = min(cursor, _MAX_MESSAGE_ID)
        rows = await self.storage.browse(name, status, limit + 1, cursor)
        page = rows[:limit]
        views = []
        for row in page:
            entry = row.entry
            live = self._actors[name].state.processing.get(entry.id)
            if live is not None:
                entry.lease_deadline = live.lease_deadline
                entry.attempt = live.attempt
            views.append(entry.view(name, row.status.label))
        next_cursor = page[-1].entry.id if len(rows) > limit and page else None
        return MessagesPage(messages=views, next_cursor=next_cursor)

    async def get_message(self, name: str, id: int) -> MessageView:
        """One message of a queue by id."""
        self.actor(name)
        if not 0 < id <= _MAX_MESSAGE_ID:
            raise MessageNotFound(id)
        row = await self.storage.get_message(id)
        if row is None or row.queue != name:
            raise MessageNotFound(id)
        return row.entry.view(name, row.status.label)

    async def retry(self, name: str, id: int) -> MessageView:
        """Move a failed or dead-lettered message of ``name`` back to pending.

        A dead-lettered message goes back to the queue it came from (if that
        queue still exists), any other failed message to ``name`` itself, with
        its attempt count reset.
        """
        source = self.actor(name)
        if not 0 < id <= _MAX_MESSAGE_ID:
            raise MessageNotFound(id)
        if id in self._retrying:
            raise InvalidTransition(id, "retry", "being retried")
        self._retrying.add(id)
        try:
            await self.storage.flush()
            row = await self.storage.get_message(id)
            if row is None or row.queue != name:
                raise MessageNotFound(id)
            entry = row.entry
            origin = entry.dead_lettered_from
            target_name = origin if origin is not None and origin in self._actors else name
            if row.status is MessageStatus.PENDING and origin is None:
                raise InvalidTransition(id, "retry", "pending")
            if row.status not in (MessageStatus.PENDING, MessageStatus.FAILED):
                raise InvalidTransition(id, "retry", row.status.label)
            was_failed = row.status is MessageStatus.FAILED

            def take(state: QueueState, now: float) -> None:
                if was_failed:
                    state.failed -= 1
                elif state.remove_pending(id) is None and not self.shared:
                    raise InvalidTransition(id, "retry", "no longer pending")
                state.emit(Restore(id, target_name))

            await source.call(take)
            entry.attempt = 0
            entry.redelivered = False
            entry.dead_lettered_from = None
            entry.deliver_at = 0.0
            entry.expires_at = 0.0  # its TTL ran with the first try; storage resets it too
            await self.actor(target_name).call(lambda state, now: state.adopt(entry, now))
            return entry.view(target_name, "pending")
        finally:
            self._retrying.discard(id)

    async def prune(self, now: float, failed_retention_s: float) -> int:
        """Prune retained messages in storage; forget pruned failed ones in the counts.

        Processed messages go by the storage's retention settings; failed
        ones once settled ``failed_retention_s`` ago (0 keeps them). Returns
        how many messages were deleted.
        """
        deleted = await self.storage.prune(now)
        if failed_retention_s > 0:
            failed = await self.storage.prune_failed(now - failed_retention_s)
            for name, count in failed.items():
                actor = self._actors.get(name)
                if actor is not None:
                    actor.cast(lambda state, _, n=count: _forget_failed(state, n))  # type: ignore[misc]
                deleted += count
        return deleted

    async def redrive(self, name: str, limit: int = 1000) -> int:
        """`retry` every failed or dead-lettered message of ``name`` (up to ``limit``)."""
        self.actor(name)
        await self.storage.flush()
        moved = 0
        for id in await self.storage.retryable_ids(name, limit):
            with suppress(BrokerError):
                await self.retry(name, id)
                moved += 1
        return moved


def _touch_if_held(state: QueueState, id: int, deadline: float, now: float) -> None:
    """Another node extended a lease this node holds (if it still does)."""
    if id in state.processing and deadline > now:
        state.touch(id, deadline - now, now)


def _forget_failed(state: QueueState, count: int) -> None:
    state.failed = max(0, state.failed - count)


def _event_of(queue: str, op: Op, now: float) -> QueueEvent | None:
    match op:
        case Insert(entry=entry):
            return QueueEvent(type="published", queue=queue, at=now, message_id=entry.id)
        case DeliverOp(id=id):
            return QueueEvent(type="delivered", queue=queue, at=now, message_id=id)
        case AckOp(id=id):
            return QueueEvent(type="acked", queue=queue, at=now, message_id=id)
        case Requeue(id=id):
            return QueueEvent(type="nacked", queue=queue, at=now, message_id=id)
        case Fail(id=id, reason=reason):
            return QueueEvent(type="failed", queue=queue, at=now, message_id=id, detail=reason)
        case DeadLetter(id=id, target=target, reason=reason):
            return QueueEvent(
                type="dead_lettered",
                queue=queue,
                at=now,
                message_id=id,
                detail=f"{reason} -> {target}",
            )
        case Drop(id=id):
            return QueueEvent(type="dropped", queue=queue, at=now, message_id=id)
        case _:
            return None

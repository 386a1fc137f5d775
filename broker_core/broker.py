"""`Broker`: the registry of queue actors and the one entry point transports call.

It creates, finds, deletes and shuts down `QueueActor`s, allocates message
ids, routes dead letters between queues, indexes in-flight messages by id
(so ``POST /messages/{id}/ack`` needs no queue name), and fans journal
operations out as `QueueEvent`s to listeners. It knows nothing of HTTP.

What differs on a `SharedStorage` (several nodes, one database) is the
`cluster.Cluster` it holds instead of a `cluster.Standalone`. The in-flight
index and settling by id are `settlement.InFlight`'s, listeners are
`events.EventHub`'s, and browse, retry, redrive and prune are
`maintenance.Maintenance`'s.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import suppress
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar, cast

from loguru import logger

from .actor import QueueActor, QueueDeleted
from .cluster import Cluster, Standalone
from .errors import (
    BrokerError,
    QueueExists,
    QueueInUse,
    QueueLimitReached,
    QueueNotFound,
    Unavailable,
)
from .events import EventHub, EventListener
from .group_views import group_figures
from .history import publisher
from .journal import (
    DeleteQueue,
    PutQueue,
)
from .maintenance import Maintenance
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
from .pending import BODY_CACHE_BYTES, BodyBudget
from .results import Results
from .retry_control import shown_options
from .settlement import InFlight

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

    from .actor import DeliverySink
    from .journal import Op, SharedStorage, Storage
    from .messages import Entry, PublishRequest, UpdateQueueRequest
    from .pending import Item
    from .queue import Published, QueueState, SettleOutcome
    from .types import MessageStatus

__all__ = ["Broker", "EventListener"]

T = TypeVar("T")

_OPTION_FIELDS = QueueOptions.__struct_fields__


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
        clock: the time, in Unix seconds.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        max_queues: int = 10_000,
        dedup_window_s: float = 300.0,
        body_cache_bytes: int = BODY_CACHE_BYTES,
        default_lease_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.default_lease_s = default_lease_s
        self.max_queues = max_queues
        self.dedup_window_s = dedup_window_s
        self.budget = BodyBudget(body_cache_bytes)
        self.clock = clock
        self._actors: dict[str, QueueActor] = {}
        self._meta: dict[str, _QueueMeta] = {}
        self.events = EventHub()
        self._consumer_ids = itertools.count(1)
        self.clean_start = True
        self.started_at = clock()
        self._node: Standalone = (
            Cluster(self, cast("SharedStorage", storage))
            if storage.shared
            else Standalone(self, storage)
        )
        self.inflight = InFlight(self, self._node)
        self.maintenance = Maintenance(self)
        self.on_queue_dropped: list[Callable[[str], Awaitable[None]]] = []
        """Called with the name of each queue deleted here or by another node (topic bindings)."""
        self.results = Results(self)

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Open storage and rebuild every queue's actor from it."""
        node = self._node
        node.before_open()
        self.clean_start = await self.storage.open()
        await node.opened(await self.storage.last_message_id())
        now = self.clock()
        for stored in await self.storage.load_queues():
            state = node.new_state(stored.name, stored.options, stored.processed, stored.failed)
            await node.restore(state, now)
            self.add_actor(state, stored.created_at, stored.updated_at)
        await node.started()
        logger.info(
            "broker started",
            queues=len(self._actors),
            clean=self.clean_start,
        )

    async def close(self) -> None:
        """Stop every actor (finishing queued work), then flush and close storage."""
        await self._node.close()
        actors = list(self._actors.values())
        await asyncio.gather(*(actor.stop() for actor in actors))
        await self.storage.close()
        logger.info("broker stopped")

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the registry (also what `cluster.Cluster` follows other nodes with) ----------

    def add_actor(self, state: QueueState, created_at: float, updated_at: float) -> QueueActor:
        """Start the actor of a queue new here (created, loaded, or made by another node)."""
        self._meta[state.name] = _QueueMeta(created_at, updated_at)
        actor = QueueActor(state, self.storage, self, clock=self.clock, claim=self._node.claim)
        self._actors[state.name] = actor
        actor.start()
        return actor

    def find_actor(self, name: str) -> QueueActor | None:
        """The actor of queue ``name``, or ``None``."""
        return self._actors.get(name)

    def actors(self) -> list[QueueActor]:
        """Every queue's actor."""
        return list(self._actors.values())

    def note_update(self, name: str, updated_at: float, options: QueueOptions) -> bool:
        """Storage shows queue ``name`` so; return whether its actor must apply the options."""
        meta = self._meta[name]
        if updated_at == meta.updated_at and options == self._actors[name].state.options:
            return False
        meta.updated_at = updated_at
        return True

    async def sync_counts(self, names: Iterable[str] | None = None) -> None:
        """Read message counts from shared storage for `info` and `totals` (no-op otherwise).

        On shared storage the counts are every node's; a node reads them
        in the background every second, and the transports call this
        before answering a request that shows counts.
        """
        await self._node.sync_counts(names)

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

    def history(self, queue: str, ops: Sequence[Op], now: float) -> Op | None:
        """The history lines of ``queue``'s journal operations (`results.Results.record`)."""
        return self.results.record(queue, ops, now)

    def ops_written(self, queue: str, ops: Sequence[Op]) -> None:
        """Keep the in-flight index and feed event listeners."""
        self.inflight.record(queue, ops)
        self.results.ops_written(queue, ops)
        self.events.ops(queue, ops, self.clock)

    def withdrawn(self, queue: str, entries: list[Entry]) -> None:
        """Take publishes whose batch failed out of every queue (a dead letter may move one)."""

        def withdraw(state: QueueState, now: float) -> None:
            self.inflight.forget(state.withdraw(queue, entries))

        logger.warning("failed publishes withdrawn", queue=queue, count=len(entries))
        for actor in self._actors.values():
            actor.cast(withdraw)

    # -- events -------------------------------------------------------------------

    def add_listener(self, listener: EventListener) -> None:
        """Call ``listener`` for every `QueueEvent` (it must not block)."""
        self.events.add(listener)

    def remove_listener(self, listener: EventListener) -> None:
        """Stop calling ``listener``."""
        self.events.remove(listener)

    def emit(self, event: QueueEvent) -> None:
        """Call every listener with ``event``."""
        self.events.emit(event)

    # -- queues -------------------------------------------------------------------

    def actor(self, name: str) -> QueueActor:
        """The actor of queue ``name``; raise `QueueNotFound` if there is none."""
        actor = self._actors.get(name)
        if actor is None:
            raise QueueNotFound(name)
        return actor

    def leases(self, name: str) -> Mapping[int, Entry]:
        """The messages leased in queue ``name`` by id: a read-only view of its actor's record.

        Raises:
            QueueNotFound: no such queue.
        """
        return MappingProxyType(self.actor(name).state.processing)

    def queue_names(self) -> list[str]:
        """Names of all queues, sorted."""
        return sorted(self._actors)

    def info(self, name: str) -> QueueInfo:
        """Counts and options of one queue (from its actor, or as last read from shared storage)."""
        state = self.actor(name).state
        meta = self._meta[name]
        counts = self._node.counts(state)
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
            **shown_options(state, self.clock()),
            **group_figures(state),
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
            counts = self._node.counts(actor.state)
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
        now = self.clock()
        self.add_actor(self._node.new_state(name, options), now, now)
        await self.storage.write([PutQueue(name, options, now, now)])
        self.emit(QueueEvent(type="queue_created", queue=name, at=now))
        logger.info("queue created", queue=name)
        return self.info(name)

    async def update_queue(self, name: str, request: UpdateQueueRequest) -> QueueInfo:
        """Change a queue's options; the actor applies them from its next turn."""
        actor = self.actor(name)
        options = request.apply(actor.state.options)
        self._check_dead_letter_target(name, options)
        meta = self._meta[name]
        meta.updated_at = now = self.clock()
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
        await self.drop_actor(actor)
        await self.storage.write([DeleteQueue(name)])
        logger.info("queue deleted", queue=name)

    async def drop_actor(self, actor: QueueActor) -> None:
        """Stop a deleted queue's actor: its calls fail, its consumers are closed."""
        name = actor.name
        del self._actors[name]
        self._meta.pop(name, None)
        self._node.forget(name)
        await actor.stop(QueueDeleted(name))
        self.inflight.forget(actor.discard())
        for hook in self.on_queue_dropped:
            await hook(name)
        self.emit(QueueEvent(type="queue_deleted", queue=name, at=self.clock()))

    async def purge(self, name: str) -> int:
        """Delete the pending messages of a queue; return how many went."""
        count = await self.actor(name).call(lambda state, _: state.purge(), durable=True)
        count += await self._node.purge_ready(name)
        self.emit(QueueEvent(type="queue_purged", queue=name, at=self.clock()))
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
        origin = publisher()
        return self._publish_call(
            name, lambda state, now: state.publish(requests, now, self._node.ids, origin)
        )

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

        origin = publisher()

        def publish_each(state: QueueState, now: float) -> list[Published | BrokerError]:
            outcomes: list[Published | BrokerError] = []
            for request in requests:
                try:
                    outcomes += state.publish((request,), now, self._node.ids, origin)
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
        self, names: Sequence[str], request: PublishRequest, topic: str | None = None
    ) -> list[PublishResult]:
        """Publish one message to several queues in one journal batch (all or none).

        ``topic``: the topic it was published to, for its history.
        """
        origin = publisher(topic)
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
                lambda state, now: state.publish([request], now, self._node.ids, origin)
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
        return self.inflight.queue_of(message_id)

    async def ack(
        self, ids: Sequence[int], *, allowed: Callable[[str], bool] | None = None
    ) -> SettleResult:
        """Ack in-flight messages by id (any queue); ``allowed`` filters by queue name."""
        return await self.inflight.ack(ids, allowed)

    async def nack(
        self,
        ids: Sequence[int],
        *,
        requeue: bool = True,
        reason: str | None = None,
        allowed: Callable[[str], bool] | None = None,
        delay_ms: int | None = None,
    ) -> SettleResult:
        """Nack in-flight messages by id: requeue them (after ``delay_ms``) or dead-letter them."""
        return await self.inflight.nack(ids, requeue, reason, allowed, delay_ms)

    async def touch(
        self, id: int, lease: float, *, allowed: Callable[[str], bool] | None = None
    ) -> float:
        """Extend the lease of an in-flight message (here or on another node); its deadline."""
        return await self.inflight.touch(id, lease, allowed)

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
        delay_ms: int | None = None,
    ) -> SettleOutcome:
        """Nack messages a push consumer holds (a requeue waits ``delay_ms`` if given)."""
        return await self.actor(name).call(
            lambda state, now: state.nack(
                ids, now, requeue=requeue, reason=reason, consumer_id=consumer_id, delay_ms=delay_ms
            )
        )

    def consumers(self, names: Iterable[str] | None = None) -> list[ConsumerInfo]:
        """The push consumers of some queues (all by default), with what they hold."""
        now = self.clock()
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

    # -- maintenance (see `maintenance.Maintenance`) -------------------------------

    async def browse(
        self, name: str, status: MessageStatus | None, limit: int, cursor: int | None
    ) -> MessagesPage:
        """A page of a queue's messages by ascending id."""
        return await self.maintenance.browse(name, status, limit, cursor)

    async def get_message(self, name: str, id: int) -> MessageView:
        """One message of a queue by id."""
        return await self.maintenance.get_message(name, id)

    async def retry(self, name: str, id: int) -> MessageView:
        """Move a failed or dead-lettered message back to pending (`Maintenance.retry`)."""
        return await self.maintenance.retry(name, id)

    async def redrive(self, name: str, limit: int = 1000) -> int:
        """`retry` every failed or dead-lettered message of ``name`` (up to ``limit``)."""
        return await self.maintenance.redrive(name, limit)

    async def prune(self, now: float, failed_retention_s: float) -> int:
        """Prune retained messages in storage (`Maintenance.prune`); return how many went."""
        return await self.maintenance.prune(now, failed_retention_s)

"""`PostgresStorage`: the PostgreSQL backend, where several broker nodes serve the same queues.

The journal is SQLite's: write-behind group commit (`storage.postgres.writer`),
one transaction per batch, each batch coalesced per message by
`storage.coalesce` and rendered as SQL by `storage.postgres.batches`.

Unlike SQLite, the database and not the node owns the pending order and the
leases (a `broker_core.journal.SharedStorage`, the core runs its queues in
shared mode):

- a node's actor `claim`s ready messages for its own consumers' credit in
  one statement (``FOR UPDATE SKIP LOCKED``, in delivery order), which
  marks them processing and owned by the node (``owner``): one consumer at
  a time across all nodes holds a message;
- every batch holds the node's row in ``broker_nodes`` (`ClusterNode.fence`)
  and every patch only touches a message that no other node holds, so a
  node presumed dead writes nothing after its leases were given away;
- each batch tells the other nodes (``NOTIFY``, sent at commit) which queues
  got ready messages and which queues changed; users' changes too. The node
  itself is told right after its commit, not by its own ``NOTIFY``, and a
  node alone on the database sends no message wakes at all;
- a message published beside a consumer of this node with credit to spare
  (and nothing ready in storage that the node knows of) is inserted
  already claimed by the node (`broker_core.journal.Insert.claimed`) and
  delivered from memory: no wake, no claim round trip after its commit;
- acks and history lines wait up to ``settle_linger_ms`` for a publish's
  commit (`settles`) instead of a transaction each, unless `SETTLE_MAX_OPS`
  of them wait already;
- the common batch is one statement, its own transaction
  (`batches.one_statement`): one round trip per batch;
- a dead node's leases come back pending and redelivered through the
  reaper of `storage.postgres.cluster`, which also expires pending TTLs.

A publish is confirmed once its batch committed: with the server's default
``synchronous_commit = on`` it is on the server's disk. The schema is
created or migrated at open (`storage.postgres.migrations`). This class
holds the lifecycle and the node's state; reads, shared-queue operations,
pruning, and users and tokens have modules of their own beside it.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import asyncpg
from loguru import logger

from broker_core.history import History
from broker_core.journal import AckOp, DeliverOp, Fail

from ..errors import StorageCorrupt, StorageUnavailable, StorageUnreachable
from ..retention import prune_in_batches
from . import history, pruning, reads, shared_queues
from .accounts import PostgresAccountStore
from .batches import apply, one_statement, wakes
from .cluster import ClusterNode, message_wake
from .connection import (
    CONNECT_TIMEOUT_S,
    LISTEN_APPLICATION,
    connect,
    create_pool,
    display_url,
    permanent_error,
    reason,
    row_count,
)
from .migrations import migrate
from .schedules import PostgresScheduleStore
from .topics import PostgresTopicStore
from .webhooks import PostgresWebhookStore
from .writer import WriteBehind

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from broker_core.journal import (
        Change,
        Op,
        QueueCounts,
        ReplayedQueue,
        StoredMessage,
        StoredQueue,
    )
    from broker_core.messages import Entry
    from broker_core.types import MessageStatus

    from ..commit_health import BatchStats

__all__ = ["PostgresStorage"]

_TABLES = (
    "broker_schema_version",
    "broker_meta",
    "broker_queues",
    "broker_messages",
    "broker_users",
    "broker_refresh_tokens",
    "broker_service_tokens",
    "broker_nodes",
    "broker_schedules",
)


SETTLE_MAX_OPS = 200
"""Waiting acks and history lines that commit without waiting for a publish.

With a window of publishes in flight, a window's acks arrive while its
publishes commit. Waiting for the next publishes put them on the critical
path: each commit carried a window of publishes and the previous window's
acks, and the producer waited for both. Committed once this many wait,
they go while the writer is idle between windows. ``benchmarks.cluster``,
one node, 500 in flight, 3 interleaved runs (2026-12-06): 37,165 msg/s
with 200 against 30,161 with 512 (the SQLite default's 38,178 beside them),
PostgreSQL's CPU per message unchanged (14 µs). At 1,000 msg/s acks never
reach 200 within the linger, so they still ride publish commits.
"""


def settles(op: Op) -> bool:
    """Whether ``op`` may wait for company: nobody awaits it and no other node needs it now.

    An ack or a failure of a message of no group (a group's next message
    waits for it on every node), and history lines of no pull (a pulled
    message may be settled at once over another node's REST API: its line
    must come after). A push delivery's line waits with its acks: at 1,000
    msg/s across two nodes (`benchmarks.cluster`, 3 interleaved runs) a
    commit per delivery took publish-to-deliver from 1.30 / 3.49 ms (p50 /
    p99) to 1.73 / 5.96. Losing one in a crash redelivers its message,
    marked redelivered.
    """
    kind = type(op)
    if kind is AckOp or kind is Fail:
        return not op.grouped  # type: ignore[union-attr]
    if kind is History:
        return not op.pulled  # type: ignore[union-attr]
    return kind is DeliverOp


class PostgresStorage:
    """Queues, messages, users and refresh tokens in one PostgreSQL database, shared by nodes.

    Args:
        url: ``postgresql://user[:password]@host[:port]/database[?...]`` (asyncpg DSN).
        linger_ms: how long a small batch waits for company before committing.
        settle_linger_ms: how long acks and history lines wait for company (`settles`).
        max_batch: a batch this large commits without lingering.
        processed_retention_s: processed messages older than this are pruned.
        processed_retention_count: at most this many processed messages are kept per queue.
        pool_size: connections for commits, claims and reads (the listener has one more).
        node_name: this node's name among the nodes.
        node_timeout_s: a node whose heartbeat stops this long is presumed dead.
        poll_s: how often idle queues look for messages a lost notification would have told.
        size_ttl_s: how long `size_bytes` answers its cached figure before refreshing it.
    """

    def __init__(
        self,
        url: str,
        *,
        linger_ms: float = 0.0,
        settle_linger_ms: float = 0.0,
        max_batch: int = 512,
        processed_retention_s: float = 3600.0,
        processed_retention_count: int = 10_000,
        pool_size: int = 4,
        node_name: str = "node",
        node_timeout_s: float = 10.0,
        poll_s: float = 1.0,
        size_ttl_s: float = 5.0,
    ) -> None:
        self.url = url
        self.where = display_url(url)
        self.processed_retention_s = processed_retention_s
        self.processed_retention_count = processed_retention_count
        self.pool_size = pool_size
        self._node_name = node_name
        self._node_timeout_s = node_timeout_s
        self._poll_s = poll_s
        self._pool: Any = None
        self._node: ClusterNode | None = None
        self._watchers: list[Callable[[Change], None]] = []
        self._buffer: WriteBehind[Op] = WriteBehind(
            self._commit,
            linger_s=linger_ms / 1000,
            max_batch=max_batch,
            permanent=permanent_error,
            settle_linger_s=settle_linger_ms / 1000,
            lazy=settles,
            settle_max=min(SETTLE_MAX_OPS, max_batch),
        )
        self._accounts = PostgresAccountStore(lambda: self.pool, self._before_direct)
        self.topics = PostgresTopicStore(lambda: self.pool, self._before_direct)
        """Topics and their bindings, shared by every node."""
        self.schedules = PostgresScheduleStore(
            lambda: self.pool, self._before_direct, lambda: self.node.id
        )
        self.webhooks = PostgresWebhookStore(lambda: self.pool, self._before_direct)
        self._tx_lock = asyncio.Lock()
        self._size = 0
        self._size_at = 0.0
        self._size_ttl_s = size_ttl_s
        self._size_task: asyncio.Task[None] | None = None
        self._vacuum = pruning.MessagesVacuum()

    @property
    def name(self) -> str:
        """The backend's name for ``/stats``."""
        return "postgres"

    @property
    def accounts(self) -> PostgresAccountStore:
        """Users and refresh tokens, in the same database."""
        return self._accounts

    @property
    def shared(self) -> bool:
        """Always: nodes on one database serve the same queues."""
        return True

    @property
    def node_name(self) -> str:
        """This node's name."""
        return self._node_name

    @property
    def node_slot(self) -> int:
        """This node's slot among the live nodes (part of its message ids)."""
        return self.node.slot

    @property
    def node(self) -> ClusterNode:
        """This node's membership (open() first)."""
        assert self._node is not None, "open() first"
        return self._node

    @property
    def degraded(self) -> str | None:
        """Why writes fail now (this node was presumed dead, a commit failed), or ``None``."""
        return self._evicted_problem() or self._buffer.degraded

    def _evicted_problem(self) -> str | None:
        if self._node is not None and self._node.evicted:
            return f"node {self._node_name} was presumed dead by the other nodes; rejoining"
        return None

    def _check_writable(self) -> None:
        """Refuse a write outside the batches while this node is presumed dead."""
        problem = self._evicted_problem()
        if problem is not None:
            raise StorageUnavailable(problem)

    @property
    def writer(self) -> WriteBehind[Op]:
        """The write-behind buffer that group-commits journal operations."""
        return self._buffer

    @property
    def batch_stats(self) -> BatchStats:
        """Commit counters (batches, ops, seconds, failures)."""
        return self._buffer.stats

    def size_bytes(self) -> int:
        """Bytes of the broker's tables with their indexes and TOAST (``pg_total_relation_size``).

        A cached figure, refreshed in the background when older than a few
        seconds: the caller (``/stats``, ``/metrics``) is synchronous.
        """
        task = self._size_task
        if (
            self._pool is not None
            and (task is None or task.done())
            and time.monotonic() - self._size_at > self._size_ttl_s
        ):
            with suppress(RuntimeError):  # no running loop: keep the cached figure
                self._size_task = asyncio.get_running_loop().create_task(self._refresh_size())
        return self._size

    async def _refresh_size(self) -> None:
        self._size_at = time.monotonic()
        try:
            size = await self.pool.fetchval(
                "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0)::bigint "
                "FROM unnest($1::text[]) AS t",
                _TABLES,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            logger.debug("storage size unavailable", reason=str(exc))
            return
        self._size = int(size)

    @property
    def pool(self) -> Any:
        """The connection pool (an ``asyncpg.Pool``)."""
        assert self._pool is not None, "open() first"
        return self._pool

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> bool:
        """Connect, create or migrate the schema, join the cluster.

        Returns:
            ``True``: a node's crash is recovered by the other nodes' reaper
            (or this one's, once it runs), not at open.

        Raises:
            StorageUnreachable: the server can't be connected to.
            StorageCorrupt: the schema is from an unknown version or can't be set up.
        """
        try:
            self._pool = await create_pool(self.url, self.pool_size)
            async with self._pool.acquire() as conn:
                await migrate(conn, self.where)
            self._node = ClusterNode(
                self._pool,
                lambda: connect(self.url, LISTEN_APPLICATION),
                name=self._node_name,
                timeout_s=self._node_timeout_s,
                poll_s=self._poll_s,
            )
            for callback in self._watchers:
                self._node.watch(callback)
            await self._node.join()
            await self._refresh_size()
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            await self._terminate()
            raise StorageUnreachable(self.where, reason(exc)) from exc
        except asyncpg.PostgresError as exc:
            await self._terminate()
            raise StorageCorrupt(self.where, reason(exc)) from exc
        except BaseException:
            await self._terminate()
            raise
        self._buffer.start()
        return True

    async def close(self) -> None:
        """Commit the buffer, give this node's leases back, leave the cluster and disconnect."""
        if self._pool is None:
            return
        try:
            await self._buffer.close()
            if self._node is not None:
                await self._node.leave()
        finally:
            await self._disconnect()

    async def crash(self) -> None:
        """Stop as ``kill -9`` would (tests): buffered operations dropped, connections cut.

        The node's row and its leases stay, for the other nodes to reap.
        """
        await self._buffer.stop()
        await self._terminate()

    async def _disconnect(self) -> None:
        await self._cancel_tasks()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT_S)
            except TimeoutError:
                pool.terminate()

    async def _terminate(self) -> None:
        """Drop every connection at once (failed open, or a crash)."""
        await self._cancel_tasks()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def _cancel_tasks(self) -> None:
        node = self._node
        if node is not None:
            await node.stop()
        task, self._size_task = self._size_task, None
        if task is not None and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    def watch(self, callback: Callable[[Change], None]) -> None:
        """Call ``callback`` with every change any node makes (this one's too)."""
        self._watchers.append(callback)
        if self._node is not None:
            self._node.watch(callback)

    # -- writes -----------------------------------------------------------------

    def write(self, ops: Sequence[Op]) -> asyncio.Future[None]:
        """Buffer ``ops``; the future resolves when their batch committed."""
        return self._buffer.write(ops)

    async def flush(self) -> None:
        """Wait for everything written so far to commit."""
        await self._buffer.flush()

    async def _commit(self, ops: list[Op]) -> None:
        node = self.node
        told = wakes(ops)
        # Alone, a message wake would only come back to this node (told below).
        payloads = node.own([p for p in told if not message_wake(p)] if node.alone else told)
        statement = one_statement(ops, node.id, payloads)
        async with self._tx_lock, self.pool.acquire() as conn:
            if statement is not None:
                # The common batch: one statement, one round trip (`batches.one_statement`).
                if not await conn.fetchval(statement.sql, *statement.params):
                    raise node.refused()
            else:
                async with conn.transaction():
                    await node.fence(conn, payloads)
                    await apply(conn, ops, node.id)
        # This node's queues learn of the commit now, not from their own NOTIFY.
        node.tell_own(told)

    # -- shared queues ------------------------------------------------------------

    async def claim(
        self, queue: str, count: int, now: float, lease_s: float = 30.0, group_concurrency: int = 1
    ) -> list[Entry]:
        """Lease up to ``count`` ready messages of ``queue`` to this node, in delivery order.

        Storage counts the delivery (``attempt``, ``redelivered``) as it
        claims; the entries come back as they were pending, and the actor's
        lease counts it the same way without writing it again.
        """
        self._check_writable()
        return await shared_queues.claim(
            self.pool, self.node.id, queue, count, now, lease_s, group_concurrency
        )

    async def recent_dedup(self, queue: str, since: float) -> list[tuple[str, int, float]]:
        """``(dedup_id, id, created_at)`` of the messages of ``queue`` published since ``since``."""
        return await shared_queues.recent_dedup(self.pool, queue, since)

    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Message counts of ``queues``, all nodes' messages (processed from the counter)."""
        await self._buffer.flush()
        return await shared_queues.counts(self.pool, queues)

    async def purge_ready(self, queue: str) -> int:
        """Delete the pending messages of ``queue`` (delayed ones too) now; return how many."""
        return await self._direct(
            "DELETE FROM broker_messages WHERE queue = $1 AND status = 0", queue
        )

    async def settle_elsewhere(
        self,
        ids: Sequence[int],
        outcome: Callable[[StoredMessage], Op | None],
        record: Callable[[Sequence[Op]], Op | None] | None = None,
    ) -> list[tuple[str, int]]:
        """Settle messages that other nodes hold (see `broker_core.journal.SharedStorage`)."""
        await self._buffer.flush()
        self._check_writable()
        async with self._tx_lock, self.pool.acquire() as conn, conn.transaction():
            return await shared_queues.settle_elsewhere(conn, self.node, ids, outcome, record)

    async def touch_elsewhere(
        self, id: int, deadline: float, allowed: Callable[[str], bool] | None
    ) -> bool:
        """Record a new lease deadline of a message another node holds, and tell that node."""
        self._check_writable()
        return await shared_queues.touch_elsewhere(self.pool, id, deadline, allowed)

    async def shared_secret(self, key: str, generate: Callable[[], str]) -> str:
        """The value of a secret every node shares (the JWT key), made by the first to ask."""
        return await shared_queues.shared_secret(self.pool, key, generate)

    # -- start-up reads ---------------------------------------------------------

    async def last_message_id(self) -> int:
        """The highest message id stored (`storage.postgres.reads.last_message_id`)."""
        return await reads.last_message_id(self.pool)

    async def load_queues(self) -> list[StoredQueue]:
        """Every queue with its options, processed count and failed count."""
        return await reads.load_queues(self.pool)

    async def replay(self, queue: str, now: float, dedup_window_s: float = 0.0) -> ReplayedQueue:
        """Ids, priorities and sizes of ready messages in id order; delayed ones as entries."""
        return await reads.replay(self.pool, queue, now, dedup_window_s)

    # -- reads --------------------------------------------------------------------

    async def load_entries(self, ids: Sequence[int]) -> list[Entry]:
        """Entries (with bodies) of those ``ids`` that are still pending."""
        await self._buffer.flush()
        return await reads.load_entries(self.pool, ids)

    async def get_message(self, id: int) -> StoredMessage | None:
        """One message by id, whatever its status."""
        await self._buffer.flush()
        return await reads.get_message(self.pool, id)

    async def history(self, id: int) -> tuple[float, str | None] | None:
        """The ``created_at`` and stored history of message ``id`` (`broker_core.history`)."""
        await self._buffer.flush()
        return await history.read_history(self.pool, id)

    async def result(self, id: int) -> bytes | None:
        """The result the ack of message ``id`` carried."""
        await self._buffer.flush()
        return await history.read_result(self.pool, id)

    async def browse(
        self, queue: str, status: MessageStatus | None, limit: int, after: int | None
    ) -> list[StoredMessage]:
        """Messages of ``queue`` (of one status, or all) by ascending id after ``after``."""
        await self._buffer.flush()
        return await reads.browse(self.pool, queue, status, limit, after)

    async def retryable_ids(self, queue: str, limit: int) -> list[int]:
        """Failed messages of ``queue`` and its dead-lettered pending ones, oldest first."""
        await self._buffer.flush()
        return await reads.retryable_ids(self.pool, queue, limit)

    # -- retention ----------------------------------------------------------------

    async def prune_failed(self, before: float) -> dict[str, int]:
        """Delete failed messages settled before ``before``; return how many per queue."""
        await self._buffer.flush()
        self._check_writable()
        async with self._tx_lock:
            return await pruning.prune_failed(self.pool, before)

    async def prune(self, now: float) -> int:
        """Delete processed (and ended) messages past their retention time or count; how many.

        One node at a time (the others skip the pass), in batches
        (`storage.retention`); then VACUUM the table if dead rows piled up.
        """
        await self._buffer.flush()
        self._check_writable()
        deleted = await prune_in_batches(lambda: self._prune_batch(now))
        if deleted:
            await self._vacuum.run_if_needed(self.pool)
        return deleted

    async def _prune_batch(self, now: float) -> tuple[int, bool]:
        # Out of the batches' way: a prune never joins (or deadlocks with) a batch.
        async with self._tx_lock:
            return await pruning.prune_batch(
                self.pool, now, self.processed_retention_s, self.processed_retention_count
            )

    # -- direct writes ------------------------------------------------------------

    async def _direct(self, sql: str, *args: Any) -> int:
        """Run one statement in its own transaction, ordered after the buffered writes.

        It runs on a connection of its own, never inside a batch's
        transaction: a batch that rolls back can't take its change with it.
        """
        await self._before_direct()
        return row_count(await self.pool.execute(sql, *args))

    async def _before_direct(self) -> None:
        """Wait for the buffered writes; refuse while this node is presumed dead."""
        await self._buffer.flush()
        self._check_writable()

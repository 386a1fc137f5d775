"""`PostgresStorage`: the PostgreSQL backend, where several broker nodes serve the same queues.

The journal is SQLite's: write-behind group commit through the same
`WriteBehind` buffer, one transaction per batch, each batch coalesced per
message by `storage.coalesce`. Rendered here: all inserts as one ``INSERT
... SELECT FROM unnest(...)`` (one array per column), each patch shape as one
pipelined ``executemany``, drops as one ``DELETE ... = ANY``. Measured on 2
cores with ``synchronous_commit=off`` (statement cost only, median per batch
of 500): inserts 5.6-6.1 ms with ``unnest`` against 7.1-8.3 ms with
``executemany``; single-shape updates 6.9-7.5 ms with ``executemany``
against 12-14 ms as ``UPDATE ... FROM unnest``.

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
  got ready messages and which queues changed; users' changes too;
- a dead node's leases come back pending and redelivered through the
  reaper of `storage.cluster`, which also expires pending TTLs.

A publish is confirmed once its batch committed: with the server's default
``synchronous_commit = on`` it is on the server's disk. The schema
(``schema_postgres.sql``, then the numbered ``schema_postgres_<n>.sql``
migrations) is created or migrated at open, from the version in
``broker_schema_version``, by one node at a time.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from loguru import logger

from broker_core.journal import (
    DeadLetter,
    DeleteQueue,
    Drop,
    Insert,
    PurgeQueue,
    PutQueue,
    QueueCounts,
    Release,
    ReplayedQueue,
    Requeue,
    Restore,
    StoredQueue,
    Trim,
)
from broker_core.messages import Entry

from ..coalesce import Segment, coalesce
from ..errors import StorageCorrupt, StorageUnavailable, StorageUnreachable
from ..retention import PRUNE_BATCH, prune_in_batches
from ..rows import ENTRY_COLUMNS, decode_options, encode_options, stored_message
from .accounts import PostgresAccountStore
from .cluster import ClusterNode, encode_change, notify
from .writer import WriteBehind

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from broker_core.journal import Change, Op, StoredMessage
    from broker_core.types import MessageStatus

    from ..commit_health import BatchStats

__all__ = ["SCHEMA_VERSION", "PostgresStorage", "check_postgres", "display_url"]

SCHEMA_VERSION = 2
"""Version 1 is ``schema_postgres.sql``; version ``n`` adds ``schema_postgres_<n>.sql``."""
_MIGRATION_LOCK = int.from_bytes(b"wsbmigra", "big")
_PRUNE_LOCK = int.from_bytes(b"wsbprune", "big")

_TABLES = (
    "broker_schema_version",
    "broker_meta",
    "broker_queues",
    "broker_messages",
    "broker_users",
    "broker_refresh_tokens",
    "broker_nodes",
)
_COLUMN_TYPES = {
    "id": "bigint", "queue": "text", "status": "smallint", "priority": "integer",
    "attempt": "integer", "redelivered": "boolean", "created_at": "float8",
    "deliver_at": "float8", "expires_at": "float8", "lease_deadline": "float8", "size": "integer",
    "content": "bytea", "headers": "bytea", "dedup_id": "text", "last_error": "text",
    "dead_lettered_from": "text", "settled_at": "float8",
}  # fmt: skip
_SELECT = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM broker_messages"
# A retried batch whose COMMIT did commit (the connection broke before the
# answer) finds its rows there already: they hold that batch's final state.
_INSERT = (
    f"INSERT INTO broker_messages ({', '.join(ENTRY_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"${n}::{_COLUMN_TYPES[c]}[]" for n, c in enumerate(ENTRY_COLUMNS, 1))
    + ") ON CONFLICT (id) DO NOTHING"
)
_PUT_META = (
    "INSERT INTO broker_meta (key, value) VALUES ($1, $2) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_CLAIM = (
    # One statement, one round trip: hold this node's row (a node presumed
    # dead claims nothing), take the first ready messages no one else is
    # taking, and mark them processing and ours.
    "WITH me AS (SELECT id FROM broker_nodes WHERE id = $3 AND NOT dead FOR SHARE), "
    "ready AS (SELECT id FROM broker_messages WHERE queue = $1 AND status = 0 "
    "AND deliver_at <= $4 AND (expires_at = 0 OR expires_at > $4) AND EXISTS (SELECT 1 FROM me) "
    "ORDER BY priority DESC, id LIMIT $2 FOR UPDATE SKIP LOCKED) "
    # The delivery is counted here (a crash before the node writes anything
    # still counts it); the entry comes back as it was, the actor counts it again.
    "UPDATE broker_messages AS m SET status = 1, owner = $3, lease_deadline = $5, "
    "attempt = m.attempt + 1, redelivered = m.redelivered OR m.attempt > 0 "
    "FROM ready WHERE m.id = ready.id RETURNING "
    + ", ".join("m.attempt - 1" if c == "attempt" else f"m.{c}" for c in ENTRY_COLUMNS)
)
_FENCE = "status <> 2 AND (status <> 1 OR owner = ${n} OR owner IS NULL)"
"""What a node's patch or drop may touch: no processed message, no message another node holds."""
_TRIM_BY_BYTES_ROWS = 1000
"""Rows a ``drop_head`` by bytes looks at beyond its count (bodies are at least 1 byte)."""
_DELAYED_WAKES = 16
"""Delivery times told per queue and batch; later ones wait for the fallback poll at worst."""
_APPLICATION = "wsbroker"
_LISTEN_APPLICATION = "wsbroker listener"
"""``application_name`` of the pool's sessions and of the listener's (``pg_stat_activity``)."""
_CONNECT_TIMEOUT_S = 10.0
_COMMAND_TIMEOUT_S = 60.0
_SIZE_TTL_S = 5.0
_VACUUM_EVERY_S = 10.0
_VACUUM_MIN_DEAD = 10_000


def display_url(url: str) -> str:
    """``url`` without its password or query (fit for logs and error messages)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def _update_sql(columns: tuple[str, ...]) -> str:
    """The fenced ``UPDATE`` of one patch shape: the columns' values, the id, the node."""
    assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(columns, 1))
    id, node = len(columns) + 1, len(columns) + 2
    return f"UPDATE broker_messages SET {assignments} WHERE id = ${id} AND {_FENCE.format(n=node)}"


def _wakes(ops: Sequence[Op]) -> list[str]:
    """The ``NOTIFY`` payloads of a batch: queues with new ready messages, changed queues."""
    ready: set[str] = set()
    delayed: dict[str, set[float]] = {}
    changed: list[str] = []
    for op in ops:
        match op:
            case Insert(queue=queue, entry=entry):
                if entry.dedup_id is not None:
                    changed.append(
                        encode_change("d", queue, entry.created_at, entry.id, entry.dedup_id)
                    )
                at = entry.deliver_at
                if at:
                    times = delayed.setdefault(queue, set())
                    if len(times) < _DELAYED_WAKES:
                        times.add(at)
                else:
                    ready.add(queue)
            case Requeue(queue=queue) | Release(queue=queue) | Restore(queue=queue):
                ready.add(queue)
            case DeadLetter(target=target) | Trim(target=str() as target):
                ready.add(target)
            case PutQueue(name=name) | DeleteQueue(name=name):
                changed.append(encode_change("q", name))
    return (
        [encode_change("m", queue) for queue in ready]
        + [encode_change("m", queue, at) for queue, times in delayed.items() for at in times]
        + changed
    )


def _count(status: str) -> int:
    """The row count of a command status such as ``"UPDATE 3"``."""
    return int(status.rpartition(" ")[2] or 0)


class PostgresStorage:
    """Queues, messages, users and refresh tokens in one PostgreSQL database, shared by nodes.

    Args:
        url: ``postgresql://user[:password]@host[:port]/database[?...]`` (asyncpg DSN).
        linger_ms: how long a small batch waits for company before committing.
        max_batch: a batch this large commits without lingering.
        processed_retention_s: processed messages older than this are pruned.
        processed_retention_count: at most this many processed messages are kept per queue.
        pool_size: connections for commits, claims and reads (the listener has one more).
        node_name: this node's name among the nodes.
        node_timeout_s: a node whose heartbeat stops this long is presumed dead.
        poll_s: how often idle queues look for messages a lost notification would have told.
    """

    def __init__(
        self,
        url: str,
        *,
        linger_ms: float = 0.0,
        max_batch: int = 512,
        processed_retention_s: float = 3600.0,
        processed_retention_count: int = 10_000,
        pool_size: int = 4,
        node_name: str = "node",
        node_timeout_s: float = 10.0,
        poll_s: float = 1.0,
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
            self._commit, linger_s=linger_ms / 1000, max_batch=max_batch
        )
        self._accounts = PostgresAccountStore(lambda: self.pool, self._before_direct)
        self._tx_lock = asyncio.Lock()
        self._updates: dict[tuple[str, ...], str] = {}
        self._size = 0
        self._size_at = 0.0
        self._size_task: asyncio.Task[None] | None = None
        self._vacuumed_at = -_VACUUM_EVERY_S

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
            and time.monotonic() - self._size_at > _SIZE_TTL_S
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
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                timeout=_CONNECT_TIMEOUT_S,
                command_timeout=_COMMAND_TIMEOUT_S,
                server_settings={"application_name": _APPLICATION},
            )
            await self._migrate()
            self._node = ClusterNode(
                self._pool,
                lambda: _connect(self.url, _LISTEN_APPLICATION),
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
            raise StorageUnreachable(self.where, _reason(exc)) from exc
        except asyncpg.PostgresError as exc:
            await self._terminate()
            raise StorageCorrupt(self.where, _reason(exc)) from exc
        except BaseException:
            await self._terminate()
            raise
        self._buffer.start()
        return True

    async def _migrate(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # Nodes started together: one creates or migrates, the others then see it done.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if not await conn.fetchval("SELECT to_regclass('broker_schema_version') IS NOT NULL"):
                await conn.execute(_schema_file(1))
                await conn.execute("INSERT INTO broker_schema_version VALUES (1)")
                version = 1
                logger.info("database schema created", database=self.where)
            else:
                version = await conn.fetchval("SELECT max(version) FROM broker_schema_version")
                if version is None or not 1 <= version <= SCHEMA_VERSION:
                    raise StorageCorrupt(self.where, f"unknown schema version {version}")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                await conn.execute(_schema_file(step))
            if version != SCHEMA_VERSION:
                await conn.execute("UPDATE broker_schema_version SET version = $1", SCHEMA_VERSION)
                logger.info("database schema migrated", database=self.where, version=SCHEMA_VERSION)

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
        """Drop every connection as a ``kill -9`` would (tests): the row and leases stay."""
        await self._terminate()

    async def _disconnect(self) -> None:
        await self._cancel_tasks()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), _CONNECT_TIMEOUT_S)
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
        async with self._tx_lock, self.pool.acquire() as conn, conn.transaction():
            await self.node.fence(conn, _wakes(ops))
            await self._apply(conn, ops)

    async def _apply(self, conn: Any, ops: list[Op]) -> None:
        """Write ``ops`` in the open transaction."""
        for step in coalesce(ops, 0).steps:
            match step:
                case Segment():
                    await self._write_segment(conn, step)
                case PutQueue(name=name, options=options, created_at=created, updated_at=updated):
                    await conn.execute(
                        "INSERT INTO broker_queues (name, options, created_at, updated_at) "
                        "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET "
                        "options = excluded.options, updated_at = excluded.updated_at",
                        name,
                        encode_options(options).decode(),
                        created,
                        updated,
                    )
                case PurgeQueue(name=name):
                    await conn.execute(
                        "DELETE FROM broker_messages WHERE queue = $1 AND status = 0", name
                    )
                case DeleteQueue(name=name):
                    await conn.execute("DELETE FROM broker_messages WHERE queue = $1", name)
                    await conn.execute("DELETE FROM broker_queues WHERE name = $1", name)
                case Trim():
                    await self._trim(conn, step)

    async def _trim(self, conn: Any, trim: Trim) -> None:
        """Drop (or dead-letter) the oldest pending messages of a queue for ``drop_head``."""
        extra = _TRIM_BY_BYTES_ROWS if trim.size else 0
        rows = await conn.fetch(
            "SELECT id, size FROM broker_messages WHERE queue = $1 AND status = 0 "
            "ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            trim.queue,
            trim.count + extra,
        )
        ids: list[int] = []
        freed = 0
        for id, size in rows:
            if len(ids) >= trim.count and freed >= trim.size:
                break
            ids.append(id)
            freed += size
        if trim.target is None:
            ops: list[Op] = [Drop(id) for id in ids]
        else:
            ops = [DeadLetter(id, trim.queue, trim.target, "maxlen") for id in ids]
        for step in coalesce(ops, 0).steps:
            assert isinstance(step, Segment), "drops and dead letters only"
            await self._write_segment(conn, step)

    async def _write_segment(self, conn: Any, segment: Segment) -> None:
        """Render one coalesced segment: inserts, patches (one statement per shape), drops, counts.

        Inserts go as one ``unnest`` statement (columns as arrays), patches
        as one pipelined ``executemany`` per shape: each measured faster than
        the other way (see the module docstring).
        """
        if segment.inserts:
            await conn.execute(_INSERT, *zip(*segment.inserts.values(), strict=True))
        node = self.node.id
        for columns, params in segment.shapes().items():
            sql = self._updates.get(columns)
            if sql is None:
                sql = self._updates[columns] = _update_sql(columns)
            await conn.executemany(sql, [(*row, node) for row in params])
        if segment.drops:
            await conn.execute(
                f"DELETE FROM broker_messages WHERE id = ANY($1::bigint[]) "
                f"AND {_FENCE.format(n=2)}",
                segment.drops,
                node,
            )
        if segment.acked:
            # In name order: nodes' batches lock these rows in one order, never in a cycle.
            await conn.executemany(
                "UPDATE broker_queues SET processed = processed + $1 WHERE name = $2",
                [(segment.acked[queue], queue) for queue in sorted(segment.acked)],
            )

    # -- shared queues ------------------------------------------------------------

    async def claim(self, queue: str, count: int, now: float, lease_s: float = 30.0) -> list[Entry]:
        """Lease up to ``count`` ready messages of ``queue`` to this node, in delivery order.

        Storage counts the delivery (``attempt``, ``redelivered``) as it
        claims; the entries come back as they were pending, and the actor's
        lease counts it the same way without writing it again.
        """
        self._check_writable()
        rows = await self.pool.fetch(_CLAIM, queue, count, self.node.id, now, now + lease_s)
        entries = [stored_message(row).entry for row in rows]
        entries.sort(key=lambda entry: (-entry.priority, entry.id))
        return entries

    async def recent_dedup(self, queue: str, since: float) -> list[tuple[str, int, float]]:
        """``(dedup_id, id, created_at)`` of the messages of ``queue`` published since ``since``."""
        rows = await self.pool.fetch(
            "SELECT dedup_id, id, created_at FROM broker_messages "
            "WHERE queue = $1 AND dedup_id IS NOT NULL AND created_at > $2",
            queue,
            since,
        )
        return [(str(key), int(id), float(at)) for key, id, at in rows]

    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Message counts of ``queues``, all nodes' messages (processed from the counter)."""
        await self._buffer.flush()
        names = list(queues)
        rows = await self.pool.fetch(
            "SELECT queue, status, count(*), coalesce(sum(size), 0)::bigint, "
            "count(*) FILTER (WHERE deliver_at > $2) FROM broker_messages "
            "WHERE queue = ANY($1::text[]) AND status <> 2 GROUP BY queue, status",
            names,
            time.time(),
        )
        found: dict[str, dict[str, int]] = {name: {} for name in names}
        for queue, status, count, size, delayed in rows:
            counts = found[queue]
            if status == 0:
                counts.update(pending=count, pending_bytes=size, delayed=delayed)
            elif status == 1:
                counts["processing"] = count
            else:
                counts["failed"] = count
        for name, processed in await self.pool.fetch(
            "SELECT name, processed FROM broker_queues WHERE name = ANY($1::text[])", names
        ):
            found[name]["processed"] = processed
        return {name: QueueCounts(**counts) for name, counts in found.items()}

    async def purge_ready(self, queue: str) -> int:
        """Delete the pending messages of ``queue`` (delayed ones too) now; return how many."""
        return await self._direct(
            "DELETE FROM broker_messages WHERE queue = $1 AND status = 0", queue
        )

    async def settle_elsewhere(
        self, ids: Sequence[int], outcome: Callable[[StoredMessage], Op | None]
    ) -> list[tuple[str, int]]:
        """Settle messages that other nodes hold (see `broker_core.journal.SharedStorage`).

        The rows are taken over by this node first (so the write's fence lets
        them through), then settled like this node's own; their holders' later
        writes about them are fenced out.
        """
        await self._buffer.flush()
        self._check_writable()
        async with self._tx_lock, self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"{_SELECT} WHERE id = ANY($1::bigint[]) AND status = 1 ORDER BY id FOR UPDATE",
                list(ids),
            )
            held = [stored_message(row) for row in rows]
            ops = [op for op in map(outcome, held) if op is not None]
            if not ops:
                return []
            settled = [(m.queue, m.entry.id) for m in held]
            await self.node.fence(conn, _wakes(ops))
            await conn.execute(
                "UPDATE broker_messages SET owner = $2 WHERE id = ANY($1::bigint[])",
                [id for _, id in settled],
                self.node.id,
            )
            await self._apply(conn, ops)
        return settled

    async def touch_elsewhere(
        self, id: int, deadline: float, allowed: Callable[[str], bool] | None
    ) -> bool:
        """Record a new lease deadline of a message another node holds, and tell that node."""
        self._check_writable()
        async with self.pool.acquire() as conn, conn.transaction():
            queue = await conn.fetchval(
                "SELECT queue FROM broker_messages WHERE id = $1 AND status = 1 FOR UPDATE", id
            )
            if queue is None or (allowed is not None and not allowed(queue)):
                return False
            await conn.execute(
                "UPDATE broker_messages SET lease_deadline = $2 WHERE id = $1", id, deadline
            )
            await notify(conn, [encode_change("t", queue, deadline, id)])
        return True

    async def shared_secret(self, key: str, generate: Callable[[], str]) -> str:
        """The value of a secret every node shares (the JWT key), made by the first to ask."""
        await self.pool.execute(
            "INSERT INTO broker_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            key,
            generate(),
        )
        return str(await self.pool.fetchval("SELECT value FROM broker_meta WHERE key = $1", key))

    # -- start-up reads ---------------------------------------------------------

    async def last_message_id(self) -> int:
        """The highest message id stored (version 1 kept the highest ever in ``broker_meta``).

        Ids made by nodes are later than any stored one (`broker_core.ids`),
        so a pruned id is not made again.
        """
        stored = await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM broker_messages")
        kept = await self.pool.fetchval("SELECT value FROM broker_meta WHERE key = 'last_id'")
        return max(int(stored), int(kept or 0))

    async def load_queues(self) -> list[StoredQueue]:
        """Every queue with its options, processed count and failed count."""
        rows = await self.pool.fetch(
            "SELECT q.name, q.options, q.created_at, q.updated_at, q.processed, "
            "(SELECT count(*) FROM broker_messages m WHERE m.queue = q.name AND m.status = 3) "
            "FROM broker_queues AS q ORDER BY q.name"
        )
        return [
            StoredQueue(
                name=name,
                options=decode_options(options),
                created_at=created_at,
                updated_at=updated_at,
                processed=processed,
                failed=failed,
            )
            for name, options, created_at, updated_at, processed, failed in rows
        ]

    async def replay(self, queue: str, now: float, dedup_window_s: float = 0.0) -> ReplayedQueue:
        """Ids, priorities and sizes of ready messages in id order; delayed ones as entries."""
        cold: list[tuple[int, int, int]] = []
        delayed: list[Entry] = []
        dedup: list[tuple[str, int, float]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            # A cursor: a backlog of millions streams in instead of landing in one result.
            async for id, priority, size in conn.cursor(
                "SELECT id, priority, size FROM broker_messages "
                "WHERE queue = $1 AND status = 0 AND deliver_at <= $2 ORDER BY id",
                queue,
                now,
                prefetch=20_000,
            ):
                cold.append((id, priority, size))
            for row in await conn.fetch(
                "SELECT id, priority, size, created_at, deliver_at, expires_at, attempt, "
                "redelivered FROM broker_messages "
                "WHERE queue = $1 AND status = 0 AND deliver_at > $2 ORDER BY id",
                queue,
                now,
            ):
                id, priority, size, created, deliver_at, expires, attempt, redelivered = row
                delayed.append(
                    Entry(
                        id,
                        content=None,
                        size=size,
                        created_at=created,
                        priority=priority,
                        deliver_at=deliver_at,
                        expires_at=expires,
                        attempt=attempt,
                        redelivered=redelivered,
                    )
                )
            if dedup_window_s > 0:
                dedup.extend(
                    (row[0], row[1], row[2])
                    for row in await conn.fetch(
                        "SELECT dedup_id, id, created_at FROM broker_messages "
                        "WHERE queue = $1 AND dedup_id IS NOT NULL AND created_at > $2",
                        queue,
                        now - dedup_window_s,
                    )
                )
        return ReplayedQueue(cold=cold, delayed=delayed, dedup=dedup)

    # -- reads --------------------------------------------------------------------

    async def load_entries(self, ids: Sequence[int]) -> list[Entry]:
        """Entries (with bodies) of those ``ids`` that are still pending."""
        await self._buffer.flush()
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE id = ANY($1::bigint[]) AND status = 0 ORDER BY id", list(ids)
        )
        return [stored_message(row).entry for row in rows]

    async def get_message(self, id: int) -> StoredMessage | None:
        """One message by id, whatever its status."""
        await self._buffer.flush()
        row = await self.pool.fetchrow(f"{_SELECT} WHERE id = $1", id)
        return stored_message(row) if row is not None else None

    async def browse(
        self, queue: str, status: MessageStatus | None, limit: int, after: int | None
    ) -> list[StoredMessage]:
        """Messages of ``queue`` (of one status, or all) by ascending id after ``after``."""
        await self._buffer.flush()
        if status is None:
            rows = await self.pool.fetch(
                f"{_SELECT} WHERE queue = $1 AND id > $2 ORDER BY id LIMIT $3",
                queue,
                after or 0,
                limit,
            )
        else:
            rows = await self.pool.fetch(
                f"{_SELECT} WHERE queue = $1 AND id > $2 AND status = $3 ORDER BY id LIMIT $4",
                queue,
                after or 0,
                int(status),
                limit,
            )
        return [stored_message(row) for row in rows]

    async def retryable_ids(self, queue: str, limit: int) -> list[int]:
        """Failed messages of ``queue`` and its dead-lettered pending ones, oldest first."""
        await self._buffer.flush()
        rows = await self.pool.fetch(
            "SELECT id FROM broker_messages WHERE queue = $1 AND (status = 3 OR "
            "(status = 0 AND dead_lettered_from IS NOT NULL)) ORDER BY id LIMIT $2",
            queue,
            limit,
        )
        return [int(row[0]) for row in rows]

    async def prune_failed(self, before: float) -> dict[str, int]:
        """Delete failed messages settled before ``before``; return how many per queue."""
        await self._buffer.flush()
        self._check_writable()
        async with self._tx_lock, self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _PRUNE_LOCK):
                return {}  # another node is pruning
            rows = await conn.fetch(
                "WITH gone AS (DELETE FROM broker_messages WHERE status = 3 AND settled_at < $1 "
                "RETURNING queue) SELECT queue, count(*) FROM gone GROUP BY queue",
                before,
            )
        return {str(queue): int(count) for queue, count in rows}

    async def prune(self, now: float) -> int:
        """Delete processed messages past their retention time or count; return how many.

        One node at a time (the others skip the pass), in batches
        (`storage.retention`); then VACUUM the table if dead rows piled up.
        """
        await self._buffer.flush()
        self._check_writable()
        deleted = await prune_in_batches(lambda: self._prune_batch(now))
        if deleted:
            await self._vacuum_if_needed()
        return deleted

    async def _prune_batch(self, now: float) -> tuple[int, bool]:
        # Out of the batches' way: a prune never joins (or deadlocks with) a batch;
        # and one node at a time, so that two never delete the same rows.
        async with self._tx_lock, self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _PRUNE_LOCK):
                return 0, False
            old = _count(
                await conn.execute(
                    "DELETE FROM broker_messages WHERE id IN (SELECT id FROM broker_messages "
                    "WHERE status = 2 AND settled_at < $1 LIMIT $2)",
                    now - self.processed_retention_s,
                    PRUNE_BATCH,
                )
            )
            deleted, full = old, old == PRUNE_BATCH
            for row in await conn.fetch("SELECT name FROM broker_queues"):
                over = _count(
                    await conn.execute(
                        "DELETE FROM broker_messages WHERE id IN (SELECT id FROM broker_messages "
                        "WHERE queue = $1 AND status = 2 ORDER BY id DESC OFFSET $2 LIMIT $3)",
                        row[0],
                        self.processed_retention_count,
                        PRUNE_BATCH,
                    )
                )
                deleted += over
                full = full or over == PRUNE_BATCH
        return deleted, full

    async def _vacuum_if_needed(self) -> None:
        """VACUUM the messages table when its dead rows outnumber a fifth of the live ones.

        Every settled message leaves dead row versions behind; autovacuum
        reclaims them where it runs (and may be off, or too slow for a
        queue's churn): without this the table grows with every message
        ever published instead of with what is retained.
        """
        if time.monotonic() - self._vacuumed_at < _VACUUM_EVERY_S:
            return
        row = await self.pool.fetchrow(
            "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables "
            "WHERE relid = 'broker_messages'::regclass"
        )
        if row is None or row[1] < max(_VACUUM_MIN_DEAD, row[0] // 5):
            return
        self._vacuumed_at = time.monotonic()
        try:
            await self.pool.execute("VACUUM (ANALYZE) broker_messages")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            logger.warning("vacuuming the messages table failed", reason=_reason(exc))

    async def _direct(self, sql: str, *args: Any) -> int:
        """Run one statement in its own transaction, ordered after the buffered writes.

        It runs on a connection of its own, never inside a batch's
        transaction: a batch that rolls back can't take its change with it.
        """
        await self._before_direct()
        return _count(await self.pool.execute(sql, *args))

    async def _before_direct(self) -> None:
        """Wait for the buffered writes; refuse while this node is presumed dead."""
        await self._buffer.flush()
        self._check_writable()


async def _connect(url: str, application: str) -> Any:
    return await asyncpg.connect(
        url, timeout=_CONNECT_TIMEOUT_S, server_settings={"application_name": application}
    )


def _schema_file(version: int) -> str:
    """The SQL of schema version ``version`` (1: the schema; later: the migration to it)."""
    name = "schema.sql" if version == 1 else f"schema_{version}.sql"
    return resources.files("storage.postgres").joinpath(name).read_text()


def _reason(exc: BaseException) -> str:
    """A one-line reason for an error (asyncpg's messages may span lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


async def check_postgres(url: str) -> None:
    """Check, without writing, that a node could open the database at ``url`` now.

    Raises:
        StorageUnreachable: the server can't be connected to.
        StorageCorrupt: its schema is from an unknown version.
    """
    where = display_url(url)
    try:
        conn = await _connect(url, _APPLICATION)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageUnreachable(where, _reason(exc)) from exc
    try:
        if await conn.fetchval("SELECT to_regclass('broker_schema_version') IS NOT NULL"):
            version = await conn.fetchval("SELECT max(version) FROM broker_schema_version")
            if version is None or not 1 <= version <= SCHEMA_VERSION:
                raise StorageCorrupt(where, f"unknown schema version {version}")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageUnreachable(where, _reason(exc)) from exc
    finally:
        await conn.close(timeout=_CONNECT_TIMEOUT_S)

"""`PostgresStorage`: the PostgreSQL backend, phase 1 (one broker node per database).

Same contract and semantics as `storage.sqlite.SQLiteStorage` (the suite in
``tests/storage/test_contract.py`` runs on both): write-behind group commit
through the same `WriteBehind` buffer, one transaction per batch, each batch
coalesced per message by `storage.coalesce`. Rendered here: all inserts as
one ``INSERT ... SELECT FROM unnest(...)`` (one array per column), each
patch shape as one pipelined ``executemany``, drops as one ``DELETE ... =
ANY``. Measured on 2 cores with ``synchronous_commit=off`` (statement cost
only, median per batch of 500): inserts 5.6-6.1 ms with ``unnest`` against
7.1-8.3 ms with ``executemany``; single-shape updates 6.9-7.5 ms with
``executemany`` against 12-14 ms as ``UPDATE ... FROM unnest``.

Recovery at open is SQLite's: processing messages come back pending and
redelivered; after an unclean stop (no clean-stop mark in ``broker_meta``)
ready pending messages are marked redelivered and message ids jump
`UNCLEAN_ID_GAP` ahead. ``last_id`` is kept in ``broker_meta`` too.
Durability is the server's: with its default ``synchronous_commit = on`` a
committed batch, hence a confirmed publish, is on the server's disk.

The schema (``schema_postgres.sql``) is created at open, or migrated by the
numbered steps in `_MIGRATIONS`, from the version in ``broker_schema_version``.

What phase 1 does NOT do (issue #12 phase 2): several broker nodes on one
database. Here, as with SQLite, a node's actors own the pending order and
the leases in memory and write them behind; a second node on the same
database would deliver the same messages and overwrite the first one's
writes. So `PostgresStorage.open` takes a session-level advisory lock
(``pg_try_advisory_lock`` on `LOCK_KEY`, held by a connection of its own for
as long as the storage is open) and refuses to start with `StorageInUse`
while another node holds it. If that session ends (server restart, network),
no batch commits and the storage reports itself degraded until the lock is
taken again. Not here yet: claiming with ``FOR UPDATE SKIP LOCKED``, lease
deadlines kept in the database, ``LISTEN/NOTIFY`` wake-ups, and redelivery
of a dead node's leases by the others.
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

from broker_core.journal import DeleteQueue, PurgeQueue, PutQueue, ReplayedQueue, StoredQueue
from broker_core.messages import Entry

from .coalesce import Segment, coalesce
from .errors import StorageCorrupt, StorageInUse, StorageUnavailable, StorageUnreachable
from .rows import (
    ENTRY_COLUMNS,
    NO_HORIZON,
    DeliveryHorizon,
    decode_options,
    encode_options,
    stored_message,
)
from .sqlite import UNCLEAN_ID_GAP
from .write_behind import BatchStats, WriteBehind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from broker_core.journal import Op, StoredMessage
    from broker_core.types import MessageStatus

    from .backend import RefreshRow

__all__ = ["LOCK_KEY", "SCHEMA_VERSION", "PostgresStorage", "check_postgres", "display_url"]

SCHEMA_VERSION = 1
LOCK_KEY = int.from_bytes(b"wsbroker", "big")
"""The advisory lock a node holds on its database (``'wsbroker'`` as a bigint)."""

_MIGRATIONS: dict[int, str] = {}
"""SQL that takes the schema from version ``n - 1`` to ``n`` (version 1 is the schema file)."""

_TABLES = (
    "broker_schema_version",
    "broker_meta",
    "broker_queues",
    "broker_messages",
    "broker_users",
    "broker_refresh_tokens",
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
_APPLICATION = "wsbroker"
_LOCK_APPLICATION = "wsbroker node lock"
"""``application_name`` of the pool's sessions and of the lock's (see ``pg_stat_activity``)."""
_CONNECT_TIMEOUT_S = 10.0
_COMMAND_TIMEOUT_S = 60.0
_LOCK_GRACE_S = 2.0
"""How long open() retries the lock: a crashed node's session may take a moment to end."""
_SIZE_TTL_S = 5.0


def display_url(url: str) -> str:
    """``url`` without its password or query (fit for logs and error messages)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


def _update_sql(columns: tuple[str, ...]) -> str:
    """The ``UPDATE`` of one patch shape: the columns' values, then the id."""
    assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(columns, 1))
    return f"UPDATE broker_messages SET {assignments} WHERE id = ${len(columns) + 1}"


def _count(status: str) -> int:
    """The row count of a command status such as ``"UPDATE 3"``."""
    return int(status.rpartition(" ")[2] or 0)


class PostgresStorage:
    """Queues, messages, users and refresh tokens in one PostgreSQL database (one node).

    Args:
        url: ``postgresql://user[:password]@host[:port]/database[?...]`` (asyncpg DSN).
        linger_ms: how long a small batch waits for company before committing.
        max_batch: a batch this large commits without lingering.
        processed_retention_s: processed messages older than this are pruned.
        processed_retention_count: at most this many processed messages are kept per queue.
        pool_size: connections for commits and reads (the lock has one more of its own).
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
    ) -> None:
        self.url = url
        self.where = display_url(url)
        self.processed_retention_s = processed_retention_s
        self.processed_retention_count = processed_retention_count
        self.pool_size = pool_size
        self._pool: Any = None
        self._lock_conn: Any = None
        self._locked = False
        self._relock_task: asyncio.Task[None] | None = None
        self._buffer: WriteBehind[Op] = WriteBehind(
            self._commit, linger_s=linger_ms / 1000, max_batch=max_batch
        )
        self._last_id = 0
        self._horizon = NO_HORIZON
        self._tx_lock = asyncio.Lock()
        self._updates: dict[tuple[str, ...], str] = {}
        self._size = 0
        self._size_at = 0.0
        self._size_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """The backend's name for ``/stats``."""
        return "postgres"

    @property
    def degraded(self) -> str | None:
        """Why writes fail now (the node lock is lost, a commit failed), or ``None``."""
        if self._pool is not None and not self._locked:
            return self._lock_problem
        return self._buffer.degraded

    @property
    def _lock_problem(self) -> str:
        return f"lost the node lock on database {self.where}; writes wait until it is back"

    def _check_lock(self) -> None:
        """Refuse to write without the node lock: another node may hold the database now."""
        if not self._locked:
            raise StorageUnavailable(self._lock_problem)

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
        """Connect, take the node lock, create or migrate the schema, recover.

        Returns:
            Whether the last stop was clean.

        Raises:
            StorageUnreachable: the server can't be connected to.
            StorageInUse: another broker node holds this database.
            StorageCorrupt: the schema is from an unknown version or can't be set up.
        """
        try:
            self._lock_conn = await _connect(self.url, _LOCK_APPLICATION)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageUnreachable(self.where, _reason(exc)) from exc
        try:
            await _take_lock(self._lock_conn, self.where)
            await self._migrate()
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                timeout=_CONNECT_TIMEOUT_S,
                command_timeout=_COMMAND_TIMEOUT_S,
                server_settings={"application_name": _APPLICATION},
            )
            clean = await self._meta("clean", "1") == "1"
            self._last_id = int(await self._meta("last_id", "0"))
            self._horizon = DeliveryHorizon(
                int(await self._meta("horizon_id", "0")),
                float(await self._meta("horizon_at", "0")),
            )
            await self._recover(clean)
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
        self._hold_lock(self._lock_conn)
        self._buffer.start()
        return clean

    def _hold_lock(self, conn: Any) -> None:
        self._lock_conn = conn
        self._locked = True
        conn.add_termination_listener(self._lock_lost)

    def _lock_lost(self, connection: object) -> None:
        """The lock's session ended (server restart, network): stop writing, take it again.

        Phase 1 runs one node per database: without the lock another node
        may start on it, so no batch commits until this node holds it again.
        """
        if connection is not self._lock_conn:
            return
        self._lock_conn = None
        self._locked = False
        logger.error("lost the database lock; writes wait", database=self.where)
        self._relock_task = asyncio.get_running_loop().create_task(self._relock())

    async def _relock(self) -> None:
        delay = 0.1
        told = False
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                conn = await _connect(self.url, _LOCK_APPLICATION)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                continue
            try:
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
                continue
            if got:
                self._hold_lock(conn)
                logger.info("database lock taken again", database=self.where)
                return
            await conn.close(timeout=_CONNECT_TIMEOUT_S)
            if not told:
                told = True
                logger.error(
                    "another broker node holds the database: this node can't write, stop it",
                    database=self.where,
                )

    async def _migrate(self) -> None:
        conn = self._lock_conn
        async with conn.transaction():
            if not await conn.fetchval("SELECT to_regclass('broker_schema_version') IS NOT NULL"):
                schema = resources.files("storage").joinpath("schema_postgres.sql").read_text()
                await conn.execute(schema)
                await conn.execute("INSERT INTO broker_schema_version VALUES ($1)", SCHEMA_VERSION)
                logger.info("database schema created", database=self.where)
                return
            version = await conn.fetchval("SELECT max(version) FROM broker_schema_version")
            if version is None or not 1 <= version <= SCHEMA_VERSION:
                raise StorageCorrupt(self.where, f"unknown schema version {version}")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                await conn.execute(_MIGRATIONS[step])
            if version != SCHEMA_VERSION:
                await conn.execute("UPDATE broker_schema_version SET version = $1", SCHEMA_VERSION)
                logger.info("database schema migrated", database=self.where, version=SCHEMA_VERSION)

    async def _meta(self, key: str, default: str) -> str:
        value = await self.pool.fetchval("SELECT value FROM broker_meta WHERE key = $1", key)
        return str(value) if value is not None else default

    async def _recover(self, clean: bool) -> None:
        now = time.time()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE broker_messages SET status = 0, redelivered = true, lease_deadline = 0 "
                "WHERE status = 1"
            )
            if not clean:
                # A delivery may have left before its record was written behind:
                # move the horizon instead of rewriting every pending row.
                self._horizon = self._horizon.after_unclean_stop(self._last_id, now)
                logger.warning("unclean stop: pending messages read as redelivered")
                # Ids handed out after the last commit may have reached consumers.
                self._last_id += UNCLEAN_ID_GAP
                await conn.execute(_PUT_META, "last_id", str(self._last_id))
                await conn.execute(_PUT_META, "horizon_id", str(self._horizon.id))
                await conn.execute(_PUT_META, "horizon_at", repr(self._horizon.at))
            await conn.execute(_PUT_META, "clean", "0")

    async def close(self) -> None:
        """Commit the buffer, mark the stop clean, release the node lock and disconnect."""
        if self._pool is None:
            return
        try:
            await self._buffer.close()
            if self.degraded is None:
                await self.pool.execute(_PUT_META, "clean", "1")
        finally:
            await self._disconnect()

    async def _disconnect(self) -> None:
        """Close the pool and the lock connection (which releases the lock)."""
        await self._cancel_tasks()
        pool, self._pool = self._pool, None
        lock_conn, self._lock_conn = self._lock_conn, None
        self._locked = False
        try:
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), _CONNECT_TIMEOUT_S)
                except TimeoutError:
                    pool.terminate()
        finally:
            if lock_conn is not None:
                lock_conn.remove_termination_listener(self._lock_lost)
                await lock_conn.close(timeout=_CONNECT_TIMEOUT_S)

    async def _terminate(self) -> None:
        """Drop every connection at once, without a clean-stop mark (failed open, or a crash)."""
        await self._cancel_tasks()
        pool, self._pool = self._pool, None
        lock_conn, self._lock_conn = self._lock_conn, None
        self._locked = False
        if pool is not None:
            pool.terminate()
        if lock_conn is not None:
            lock_conn.remove_termination_listener(self._lock_lost)
            lock_conn.terminate()

    async def _cancel_tasks(self) -> None:
        tasks = (self._size_task, self._relock_task)
        self._size_task = self._relock_task = None
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    # -- writes -----------------------------------------------------------------

    def write(self, ops: Sequence[Op]) -> asyncio.Future[None]:
        """Buffer ``ops``; the future resolves when their batch committed."""
        return self._buffer.write(ops)

    async def flush(self) -> None:
        """Wait for everything written so far to commit."""
        await self._buffer.flush()

    async def _commit(self, ops: list[Op]) -> None:
        if not self._locked:
            # WriteBehind retries the batch (and reports the storage degraded) until it commits.
            raise ConnectionError(self._lock_problem)
        async with self._tx_lock, self.pool.acquire() as conn, conn.transaction():
            last_id = await self._apply(conn, ops)
        # Only once committed: a failed batch is retried and must write it again.
        self._last_id = last_id

    async def _apply(self, conn: Any, ops: list[Op]) -> int:
        """Write ``ops`` in the open transaction; return the highest message id now stored."""
        plan = coalesce(ops, self._last_id)
        for step in plan.steps:
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
        if plan.last_id != self._last_id:
            await conn.execute(_PUT_META, "last_id", str(plan.last_id))
        return plan.last_id

    async def _write_segment(self, conn: Any, segment: Segment) -> None:
        """Render one coalesced segment: inserts, patches (one statement per shape), drops, counts.

        Inserts go as one ``unnest`` statement (columns as arrays), patches
        as one pipelined ``executemany`` per shape: each measured faster than
        the other way (see the module docstring).
        """
        if segment.inserts:
            await conn.execute(_INSERT, *zip(*segment.inserts.values(), strict=True))
        for columns, params in segment.shapes().items():
            sql = self._updates.get(columns)
            if sql is None:
                sql = self._updates[columns] = _update_sql(columns)
            await conn.executemany(sql, params)
        if segment.drops:
            await conn.execute(
                "DELETE FROM broker_messages WHERE id = ANY($1::bigint[])", segment.drops
            )
        if segment.acked:
            await conn.executemany(
                "UPDATE broker_queues SET processed = processed + $1 WHERE name = $2",
                [(count, queue) for queue, count in segment.acked.items()],
            )

    # -- start-up reads ---------------------------------------------------------

    async def last_message_id(self) -> int:
        """The highest message id ever stored, kept in ``broker_meta``: pruning reuses none."""
        return self._last_id

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
                        redelivered=redelivered or self._horizon.covers(id, deliver_at),
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
        return [stored_message(row, self._horizon).entry for row in rows]

    async def get_message(self, id: int) -> StoredMessage | None:
        """One message by id, whatever its status."""
        await self._buffer.flush()
        row = await self.pool.fetchrow(f"{_SELECT} WHERE id = $1", id)
        return stored_message(row, self._horizon) if row is not None else None

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
        return [stored_message(row, self._horizon) for row in rows]

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
        self._check_lock()
        async with self._tx_lock:
            rows = await self.pool.fetch(
                "WITH gone AS (DELETE FROM broker_messages WHERE status = 3 AND settled_at < $1 "
                "RETURNING queue) SELECT queue, count(*) FROM gone GROUP BY queue",
                before,
            )
        return {str(queue): int(count) for queue, count in rows}

    async def prune(self, now: float) -> int:
        """Delete processed messages past their retention time or count; return how many."""
        await self._buffer.flush()
        self._check_lock()
        # Out of the batches' way: a prune never joins (or deadlocks with) a batch.
        async with self._tx_lock, self.pool.acquire() as conn:
            deleted = _count(
                await conn.execute(
                    "DELETE FROM broker_messages WHERE id IN (SELECT id FROM broker_messages "
                    "WHERE status = 2 AND settled_at < $1 LIMIT 5000)",
                    now - self.processed_retention_s,
                )
            )
            for row in await conn.fetch("SELECT name FROM broker_queues"):
                deleted += _count(
                    await conn.execute(
                        "DELETE FROM broker_messages WHERE id IN (SELECT id FROM broker_messages "
                        "WHERE queue = $1 AND status = 2 ORDER BY id DESC OFFSET $2 LIMIT 5000)",
                        row[0],
                        self.processed_retention_count,
                    )
                )
        return deleted

    # -- users and refresh tokens -------------------------------------------------

    async def get_user(self, username: str) -> bytes | None:
        """A user's stored document, or ``None``."""
        document = await self.pool.fetchval(
            "SELECT document FROM broker_users WHERE username = $1", username
        )
        return bytes(document) if document is not None else None

    async def list_users(self) -> list[bytes]:
        """Every user's document, by username."""
        rows = await self.pool.fetch("SELECT document FROM broker_users ORDER BY username")
        return [bytes(row[0]) for row in rows]

    async def put_user(self, username: str, document: bytes) -> None:
        """Create or replace a user."""
        await self._direct(
            "INSERT INTO broker_users (username, document) VALUES ($1, $2) "
            "ON CONFLICT (username) DO UPDATE SET document = excluded.document",
            username,
            document,
        )

    async def delete_user(self, username: str) -> bool:
        """Delete a user and revoke its refresh tokens; return whether it existed."""
        await self.revoke_user_tokens(username)
        return await self._direct("DELETE FROM broker_users WHERE username = $1", username) > 0

    async def put_refresh(self, jti: str, family: str, username: str, expires_at: float) -> None:
        """Remember an issued refresh token."""
        await self._direct(
            "INSERT INTO broker_refresh_tokens (jti, family, username, expires_at) "
            "VALUES ($1, $2, $3, $4)",
            jti,
            family,
            username,
            expires_at,
        )

    async def get_refresh(self, jti: str) -> RefreshRow | None:
        """``(family, username, expires_at, revoked)`` of a refresh token, or ``None``."""
        row = await self.pool.fetchrow(
            "SELECT family, username, expires_at, revoked FROM broker_refresh_tokens "
            "WHERE jti = $1",
            jti,
        )
        return (row[0], row[1], row[2], bool(row[3])) if row is not None else None

    async def revoke_refresh(self, jti: str) -> bool:
        """Revoke one refresh token; return whether it was active (the rotation's check-and-set)."""
        return (
            await self._direct(
                "UPDATE broker_refresh_tokens SET revoked = true WHERE jti = $1 AND NOT revoked",
                jti,
            )
            > 0
        )

    async def revoke_family(self, family: str) -> None:
        """Revoke every refresh token of a family (reuse of a revoked one was detected)."""
        await self._direct(
            "UPDATE broker_refresh_tokens SET revoked = true WHERE family = $1", family
        )

    async def revoke_user_tokens(self, username: str) -> None:
        """Revoke every refresh token of a user (password changed, user deleted)."""
        await self._direct(
            "UPDATE broker_refresh_tokens SET revoked = true WHERE username = $1", username
        )

    async def _direct(self, sql: str, *args: Any) -> int:
        """Run one statement in its own transaction, ordered after the buffered writes.

        It runs on a connection of its own, never inside a batch's
        transaction: a batch that rolls back can't take a revocation with it.
        """
        await self._buffer.flush()
        self._check_lock()
        return _count(await self.pool.execute(sql, *args))


async def _connect(url: str, application: str) -> Any:
    return await asyncpg.connect(
        url, timeout=_CONNECT_TIMEOUT_S, server_settings={"application_name": application}
    )


async def _take_lock(conn: Any, where: str) -> None:
    """Take the node lock on ``conn``'s session, or raise `StorageInUse`."""
    deadline = time.monotonic() + _LOCK_GRACE_S
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
        if time.monotonic() > deadline:
            raise StorageInUse(where)
        await asyncio.sleep(0.05)


def _reason(exc: BaseException) -> str:
    """A one-line reason for an error (asyncpg's messages may span lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


async def check_postgres(url: str) -> None:
    """Check, without writing, that a node could open the database at ``url`` now.

    Raises:
        StorageUnreachable: the server can't be connected to.
        StorageInUse: another broker node holds the database.
        StorageCorrupt: its schema is from an unknown version.
    """
    where = display_url(url)
    try:
        conn = await _connect(url, _APPLICATION)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageUnreachable(where, _reason(exc)) from exc
    try:
        await _take_lock(conn, where)
        await conn.fetchval("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        if await conn.fetchval("SELECT to_regclass('broker_schema_version') IS NOT NULL"):
            version = await conn.fetchval("SELECT max(version) FROM broker_schema_version")
            if version is None or not 1 <= version <= SCHEMA_VERSION:
                raise StorageCorrupt(where, f"unknown schema version {version}")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageUnreachable(where, _reason(exc)) from exc
    finally:
        await conn.close(timeout=_CONNECT_TIMEOUT_S)

"""`SQLiteStorage`: the embedded default backend (one file, WAL, write-behind group commit).

Each batch of journal operations is coalesced per message before it is
written (`storage.coalesce`, shared with PostgreSQL): a message published
and acked in the same batch becomes one ``INSERT`` of a processed row;
otherwise each message gets one ``UPDATE`` with the columns its operations
changed, one ``executemany`` per shape. Queue-wide operations (purge,
delete) are barriers that keep their place in the order.

Durability: ``synchronous=NORMAL`` in WAL mode (the default) survives a
process crash (``kill -9``) with every committed batch; a power loss may lose
the last batches committed since the last checkpoint. ``FULL`` fsyncs each
commit and survives power loss too, at a cost in throughput.

After an unclean stop every pending message that may have been delivered
is marked redelivered (write-behind may have lost its delivery record), and
every processing one comes back pending and redelivered. Message ids then
continue `UNCLEAN_ID_GAP` past the last committed one: a message is pushed
to consumers before its batch commits, so ids just past it may have been
seen by a consumer for a message the crash lost, and must never name another.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager, suppress
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Any

import aiosqlite
from loguru import logger

from broker_core.journal import (
    DeleteQueue,
    PurgeQueue,
    PutQueue,
    ReplayedQueue,
    StoredQueue,
)
from broker_core.messages import Entry

from ..coalesce import Barrier, Segment, coalesce
from ..errors import StorageCorrupt
from ..retention import PRUNE_BATCH, prune_in_batches
from ..rows import (
    ENTRY_COLUMNS,
    NO_HORIZON,
    DeliveryHorizon,
    decode_options,
    encode_options,
    stored_message,
)
from .accounts import SQLiteAccountStore
from .checkpointer import Checkpointer
from .writer import SQLiteWriter

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from broker_core.journal import Op, StoredMessage
    from broker_core.types import MessageStatus

    from ..commit_health import BatchStats

__all__ = ["PAGE_SIZE", "SCHEMA_VERSION", "UNCLEAN_ID_GAP", "SQLiteStorage", "check_database"]

SCHEMA_VERSION = 1
UNCLEAN_ID_GAP = 1 << 24
"""Ids skipped after an unclean stop: more than the write-behind buffer ever holds uncommitted."""
PAGE_SIZE = 16384
"""Bytes per page of a new database by default (SQLite's default is 4096).

A batch of 1 KiB messages appends rows and rewrites the rows its acks
settle: with 16 KiB pages that is a quarter of the pages, B-tree splits and
WAL frames to write. End to end, a group commit took about 20% less time
(6.4 against 7.9 ms, medians of interleaved runs; the README's performance
section). Small commits pay for it: each writes whole pages (see
``Settings.sqlite_page_size``). A database made with another page size
keeps it.
"""
_WAL_NET_BYTES = 32 * 1024 * 1024
"""The WAL size past which the writer checkpoints in a commit: a safety net.

The checkpointer copies the log in the background, but with commits
arriving all the time the log is never found fully copied when the next
transaction starts, so it would never start over. At this size the writer
checkpoints the little the checkpointer left, and the log starts over.
"""
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes the WAL file is trimmed to when it starts over (it is reused, not regrown, below that)."""
_WRITER_CACHE_BYTES = 8 * 1024 * 1024
"""The writer's page cache: the pages new rows go to and the recent rows acks rewrite."""
_READER_CACHE_BYTES = 8 * 1024 * 1024
"""The reader's page cache: cold bodies are read once, in id order."""
_ENTRY_COLUMNS = ", ".join(ENTRY_COLUMNS)
_INSERT = f"INSERT INTO messages ({_ENTRY_COLUMNS}) VALUES ({', '.join('?' * len(ENTRY_COLUMNS))})"


def check_database(path: Path) -> None:
    """Fail fast, before serving, when ``path`` exists but is no usable database.

    Raises:
        StorageCorrupt: with a one-line reason.
    """
    if not path.exists():
        return
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = connection.execute("PRAGMA quick_check").fetchone()
            version = connection.execute("PRAGMA user_version").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise StorageCorrupt(str(path), str(exc)) from None
    if row is None or row[0] != "ok":
        raise StorageCorrupt(str(path), f"integrity check says {row}")
    if version not in (0, SCHEMA_VERSION):
        raise StorageCorrupt(str(path), f"unknown schema version {version}")


class SQLiteStorage:
    """Queues, messages, users and refresh tokens in one SQLite file (users: `accounts`).

    Writes go through one writer thread (`storage.sqlite_writer`): message
    operations in group-committed batches, everything else as calls
    between batches. Reads go through a second, read-only connection
    (aiosqlite), which WAL lets run beside a commit.

    Args:
        path: the database file (created with its directory's permissions).
        synchronous: ``"NORMAL"`` or ``"FULL"`` (see the module docstring).
        page_size: bytes per page if the database is new (see `PAGE_SIZE`).
        linger_ms: how long a small batch waits for company before committing.
        max_batch: a batch this large commits without lingering.
        processed_retention_s: processed messages older than this are pruned.
        processed_retention_count: at most this many processed messages are kept per queue.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        page_size: int = PAGE_SIZE,
        linger_ms: float = 0.0,
        max_batch: int = 512,
        processed_retention_s: float = 3600.0,
        processed_retention_count: int = 10_000,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.page_size = page_size
        self.processed_retention_s = processed_retention_s
        self.processed_retention_count = processed_retention_count
        self._reader: aiosqlite.Connection | None = None
        self.checkpointer = Checkpointer(lambda: sqlite3.connect(self.path))
        self.writer = SQLiteWriter(
            self._connect_writer, self._write_batch, linger_s=linger_ms / 1000, max_batch=max_batch
        )
        self._accounts = SQLiteAccountStore(self.writer, lambda: self.reader)
        self._last_id = 0
        self._recorded_id = 0
        self._horizon = NO_HORIZON

    @property
    def name(self) -> str:
        """The backend's name for ``/stats``."""
        return "sqlite"

    @property
    def shared(self) -> bool:
        """Never: one broker process owns a SQLite database."""
        return False

    @property
    def accounts(self) -> SQLiteAccountStore:
        """Users and refresh tokens, in the same file."""
        return self._accounts

    @property
    def degraded(self) -> str | None:
        """Why writes fail now, or ``None`` when they commit."""
        return self.writer.degraded

    @property
    def batch_stats(self) -> BatchStats:
        """Commit counters (batches, ops, seconds, failures)."""
        return self.writer.stats

    def size_bytes(self) -> int:
        """Bytes of the database file and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with suppress(OSError):
                total += self.path.with_name(self.path.name + suffix).stat().st_size
        return total

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read-only connection."""
        assert self._reader is not None, "open() first"
        return self._reader

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> bool:
        """Open the database, apply the schema, recover; return whether the last stop was clean.

        Raises:
            StorageCorrupt: the file is not a SQLite database or fails its check.
        """
        try:
            await self.writer.start()
            clean = await self.writer.call(self._prepare)
            self.checkpointer.start()
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA query_only=ON")
            await self._reader.execute("PRAGMA busy_timeout=5000")
            await self._reader.execute(f"PRAGMA cache_size={-_READER_CACHE_BYTES // 1024}")
        except sqlite3.DatabaseError as exc:
            await self._close_db()
            raise StorageCorrupt(str(self.path), str(exc)) from exc
        except StorageCorrupt:
            await self._close_db()
            raise
        return clean

    def _connect_writer(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            # Only a new, empty database takes it (before WAL mode and the schema).
            connection.execute(f"PRAGMA page_size={int(self.page_size)}")
            connection.execute(f"PRAGMA synchronous={self.synchronous}")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA busy_timeout=5000")
            connection.execute(f"PRAGMA cache_size={-_WRITER_CACHE_BYTES // 1024}")
            # Checkpoints run in their own thread (`storage.checkpointer`); this one is a net.
            (page_size,) = connection.execute("PRAGMA page_size").fetchone()
            connection.execute(f"PRAGMA wal_autocheckpoint={_WAL_NET_BYTES // page_size}")
            connection.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _prepare(self, db: sqlite3.Connection) -> bool:
        """Check, create or recognise the schema, read the meta rows, recover (writer thread)."""
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StorageCorrupt(str(self.path), f"integrity check says {check}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.executescript(resources.files("storage.sqlite").joinpath("schema.sql").read_text())
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise StorageCorrupt(str(self.path), f"unknown schema version {version}")
        meta: dict[str, str] = dict(db.execute("SELECT key, value FROM meta").fetchall())
        clean = meta.get("clean", "1") == "1"
        # Batches record the highest id only when they delete rows: else the rows hold it.
        self._recorded_id = int(meta.get("last_id", 0))
        (highest_row,) = db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
        self._last_id = max(self._recorded_id, highest_row)
        self._horizon = DeliveryHorizon(
            int(meta.get("horizon_id", 0)), float(meta.get("horizon_at", 0))
        )
        self._recover(db, clean)
        return clean

    def _recover(self, db: sqlite3.Connection, clean: bool) -> None:
        db.execute("BEGIN")
        db.execute(
            "UPDATE messages SET status = 0, redelivered = 1, lease_deadline = 0 WHERE status = 1"
        )
        if not clean:
            # A delivery may have left before its record was written behind:
            # move the horizon instead of rewriting every pending row.
            self._horizon = self._horizon.after_unclean_stop(self._last_id, time.time())
            logger.warning("unclean stop: pending messages read as redelivered")
            # Ids handed out after the last commit may have reached consumers.
            self._last_id += UNCLEAN_ID_GAP
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [
                    ("last_id", str(self._last_id)),
                    ("horizon_id", str(self._horizon.id)),
                    ("horizon_at", str(self._horizon.at)),
                ],
            )
        db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '0')")
        db.execute("COMMIT")
        if not clean:
            self._recorded_id = self._last_id

    async def close(self) -> None:
        """Commit the buffer, mark the stop clean and close the file."""
        if self._reader is None:
            return
        await self.writer.drain()
        if self.writer.degraded is None:
            await self.writer.call(
                lambda db: db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '1')")
            )
        await self._close_db()

    async def _close_db(self) -> None:
        """Stop the writer (dropping what it still buffers, as a crash would) and the reader."""
        await self.writer.stop()
        self.checkpointer.stop()
        if self._reader is not None:
            try:
                await self._reader.close()
            finally:
                self._reader = None

    # -- writes -----------------------------------------------------------------

    def write(self, ops: Sequence[Op]) -> asyncio.Future[None]:
        """Buffer ``ops``; the future resolves when their batch committed."""
        return self.writer.write(ops)

    async def flush(self) -> None:
        """Wait for everything written so far to commit."""
        await self.writer.flush()

    def _write_batch(self, db: sqlite3.Connection, ops: list[Op]) -> None:
        """Write one batch in one transaction (writer thread).

        The highest message id must never go back, or an id a client has
        seen could name another message. A batch that only inserts and
        updates leaves it in a row; one that deletes rows (or drops a message
        it inserted) records it in ``meta`` in the same transaction. Writing
        ``meta`` on every batch cost a page of WAL per commit: about a sixth
        of a small commit's pages.
        """
        plan = coalesce(ops, self._last_id)
        record = plan.removes and plan.last_id != self._recorded_id
        with _transaction(db):
            for step in plan.steps:
                _write_step(db, step)
            if record:
                _write_last_id(db, plan.last_id)
        # Only once committed: a failed batch is retried and must write it again.
        self._last_id = plan.last_id
        if record:
            self._recorded_id = plan.last_id

    def _record_last_id(self, db: sqlite3.Connection) -> None:
        """Commit the highest id to ``meta`` before a call deletes rows (autocommit mode)."""
        if self._recorded_id != self._last_id:
            _write_last_id(db, self._last_id)
            self._recorded_id = self._last_id

    # -- start-up reads ---------------------------------------------------------

    async def last_message_id(self) -> int:
        """The highest message id ever stored (the highest row, or ``meta`` once rows went)."""
        return self._last_id

    async def load_queues(self) -> list[StoredQueue]:
        """Every queue with its options, processed count and failed count."""
        failed: dict[str, int] = {}
        async with self.reader.execute(
            "SELECT queue, count(*) FROM messages WHERE status = 3 GROUP BY queue"
        ) as cursor:
            async for queue, count in cursor:
                failed[queue] = count
        queues = []
        async with self.reader.execute(
            "SELECT name, options, created_at, updated_at, processed FROM queues ORDER BY name"
        ) as cursor:
            async for name, options, created_at, updated_at, processed in cursor:
                queues.append(
                    StoredQueue(
                        name=name,
                        options=decode_options(options),
                        created_at=created_at,
                        updated_at=updated_at,
                        processed=processed,
                        failed=failed.get(name, 0),
                    )
                )
        return queues

    async def replay(self, queue: str, now: float, dedup_window_s: float = 0.0) -> ReplayedQueue:
        """Ids, priorities and sizes of ready messages in id order; delayed ones as entries."""
        cold: list[tuple[int, int, int]] = []
        async with self.reader.execute(
            "SELECT id, priority, size FROM messages "
            "WHERE queue = ? AND status = 0 AND deliver_at <= ? ORDER BY id",
            (queue, now),
        ) as cursor:
            while rows := await cursor.fetchmany(20_000):
                cold.extend((row[0], row[1], row[2]) for row in rows)
        delayed = []
        async with self.reader.execute(
            "SELECT id, priority, size, created_at, deliver_at, expires_at, attempt, redelivered "
            "FROM messages WHERE queue = ? AND status = 0 AND deliver_at > ? ORDER BY id",
            (queue, now),
        ) as cursor:
            async for id, priority, size, created, deliver_at, expires, attempt, redo in cursor:
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
                        redelivered=bool(redo) or self._horizon.covers(id, deliver_at),
                    )
                )
        dedup: list[tuple[str, int, float]] = []
        if dedup_window_s > 0:
            async with self.reader.execute(
                "SELECT dedup_id, id, created_at FROM messages "
                "WHERE queue = ? AND dedup_id IS NOT NULL AND created_at > ?",
                (queue, now - dedup_window_s),
            ) as cursor:
                dedup.extend((row[0], row[1], row[2]) for row in await cursor.fetchall())
        return ReplayedQueue(cold=cold, delayed=delayed, dedup=dedup)

    # -- reads --------------------------------------------------------------------

    async def load_entries(self, ids: Sequence[int]) -> list[Entry]:
        """Entries (with bodies) of those ``ids`` that are still pending."""
        await self.writer.flush()
        out: list[Entry] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            async with self.reader.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM messages WHERE id IN ({marks}) AND status = 0",
                tuple(chunk),
            ) as cursor:
                out.extend(
                    stored_message(row, self._horizon).entry for row in await cursor.fetchall()
                )
        return out

    async def get_message(self, id: int) -> StoredMessage | None:
        """One message by id, whatever its status."""
        await self.writer.flush()
        async with self.reader.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM messages WHERE id = ?", (id,)
        ) as cursor:
            row = await cursor.fetchone()
        return stored_message(row, self._horizon) if row is not None else None

    async def browse(
        self, queue: str, status: MessageStatus | None, limit: int, after: int | None
    ) -> list[StoredMessage]:
        """Messages of ``queue`` (of one status, or all) by ascending id after ``after``."""
        await self.writer.flush()
        sql = f"SELECT {_ENTRY_COLUMNS} FROM messages WHERE queue = ? AND id > ?"
        params: tuple[Any, ...] = (queue, after or 0)
        if status is not None:
            sql += " AND status = ?"
            params += (int(status),)
        sql += " ORDER BY id LIMIT ?"
        async with self.reader.execute(sql, (*params, limit)) as cursor:
            return [stored_message(row, self._horizon) for row in await cursor.fetchall()]

    async def retryable_ids(self, queue: str, limit: int) -> list[int]:
        """Failed messages of ``queue`` and its dead-lettered pending ones, oldest first."""
        await self.writer.flush()
        async with self.reader.execute(
            "SELECT id FROM messages WHERE queue = ? AND (status = 3 OR "
            "(status = 0 AND dead_lettered_from IS NOT NULL)) ORDER BY id LIMIT ?",
            (queue, limit),
        ) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    async def prune_failed(self, before: float) -> dict[str, int]:
        """Delete failed messages settled before ``before``; return how many per queue."""
        await self.writer.flush()

        def prune(db: sqlite3.Connection) -> dict[str, int]:
            self._record_last_id(db)
            with _transaction(db):
                counts = dict(
                    db.execute(
                        "SELECT queue, count(*) FROM messages WHERE status = 3 AND settled_at < ? "
                        "GROUP BY queue",
                        (before,),
                    ).fetchall()
                )
                if counts:
                    db.execute(
                        "DELETE FROM messages WHERE status = 3 AND settled_at < ?", (before,)
                    )
                return counts

        return await self.writer.call(prune)

    async def prune(self, now: float) -> int:
        """Delete processed messages past their retention time or count; return how many.

        In batches (`storage.retention`); SQLite reuses the freed pages.
        """
        await self.writer.flush()
        return await prune_in_batches(lambda: self.writer.call(partial(self._prune_batch, now)))

    def _prune_batch(self, now: float, db: sqlite3.Connection) -> tuple[int, bool]:
        self._record_last_id(db)
        cursor = db.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
            "WHERE status = 2 AND settled_at < ? LIMIT ?)",
            (now - self.processed_retention_s, PRUNE_BATCH),
        )
        deleted = max(cursor.rowcount, 0)
        full = deleted == PRUNE_BATCH
        for (queue,) in db.execute("SELECT name FROM queues").fetchall():
            cursor = db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                "WHERE queue = ? AND status = 2 ORDER BY id DESC LIMIT ? OFFSET ?)",
                (queue, PRUNE_BATCH, self.processed_retention_count),
            )
            over = max(cursor.rowcount, 0)
            deleted += over
            full = full or over == PRUNE_BATCH
        return deleted, full


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back when the body raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        # SQLite may have rolled back already (SQLITE_FULL, I/O errors):
        # the original error is the one to report.
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _write_last_id(db: sqlite3.Connection, last_id: int) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES ('last_id', ?)", (str(last_id),))


def _write_step(db: sqlite3.Connection, step: Segment | Barrier) -> None:
    match step:
        case Segment():
            _write_segment(db, step)
        case PutQueue(name=name, options=options, created_at=created, updated_at=updated):
            db.execute(
                "INSERT INTO queues (name, options, created_at, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "options = excluded.options, updated_at = excluded.updated_at",
                (name, encode_options(options), created, updated),
            )
        case PurgeQueue(name=name):
            db.execute("DELETE FROM messages WHERE queue = ? AND status = 0", (name,))
        case DeleteQueue(name=name):
            db.execute("DELETE FROM messages WHERE queue = ?", (name,))
            db.execute("DELETE FROM queues WHERE name = ?", (name,))


def _write_segment(db: sqlite3.Connection, segment: Segment) -> None:
    """Render one coalesced segment: inserts, one ``executemany`` per patch shape, drops, counts."""
    if segment.inserts:
        db.executemany(_INSERT, list(segment.inserts.values()))
    for columns, params in segment.shapes().items():
        assignments = ", ".join(f"{column} = ?" for column in columns)
        db.executemany(f"UPDATE messages SET {assignments} WHERE id = ?", params)
    if segment.drops:
        db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in segment.drops])
    if segment.acked:
        db.executemany(
            "UPDATE queues SET processed = processed + ? WHERE name = ?",
            [(count, queue) for queue, count in segment.acked.items()],
        )

"""`SQLiteStorage`: the embedded default backend (one file, WAL, write-behind group commit).

Each batch of journal operations is coalesced per message before it is
written (`storage.coalesce`, shared with PostgreSQL): a message published
and acked in the same batch becomes one ``INSERT`` of a processed row;
otherwise each message gets one ``UPDATE`` with the columns its operations
changed, one ``executemany`` per shape (`storage.sqlite.batches`).
Queue-wide operations (purge, delete) are barriers that keep their place in
the order. Reads, pruning, users and tokens, and the schema's version have
modules of their own beside this one.

Durability: ``synchronous=NORMAL`` (the default) survives a process crash
(``kill -9``) with every committed batch, since a commit is in the WAL
(the page cache keeps it) before its publishes are confirmed; the
checkpointer fsyncs the segments, the WAL and the database at each
checkpoint, and a power loss may lose the batches committed since the last
one. ``FULL`` fsyncs each batch's bodies in their segment, then the
commit's WAL frames, before the batch's publishes are confirmed: it
survives power loss, at the cost of a partly filled disk block of the WAL
and of the segment rewritten by every commit (README, Disk writes).

After an unclean stop every pending message that may have been delivered
is marked redelivered (write-behind may have lost its delivery record), and
every processing one comes back pending and redelivered. Message ids then
continue `UNCLEAN_ID_GAP` past the last committed one: a message is pushed
to consumers before its batch commits, so ids just past it may have been
seen by a consumer for a message the crash lost, and must never name another.

A lost write-ahead log is caught at start: the highest id committed is kept
outside the log (`storage.sqlite.watermark`), and a database behind it is
refused (`storage.errors.CommittedDataMissing`) unless ``accept_data_loss``.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING

import aiosqlite
from loguru import logger

from ..coalesce import coalesce
from ..errors import CommittedDataMissing, SegmentDataMissing, StorageCorrupt, StorageError
from ..retention import prune_in_batches
from ..rows import NO_HORIZON, DeliveryHorizon
from . import history, pruning, reads
from .accounts import SQLiteAccountStore
from .batches import stage_bodies, transaction, write_last_id, write_step
from .checkpointer import Checkpointer
from .migrations import migrate
from .schedules import SQLiteScheduleStore
from .segments import HIGHEST_REF_SQL, SegmentLog, segments_path, unpack_ref
from .topics import SQLiteTopicStore
from .watermark import CommitWatermark, highest_committed_id
from .webhooks import SQLiteWebhookStore
from .writer import SQLiteWriter

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence
    from pathlib import Path

    from broker_core.journal import Op, ReplayedQueue, StoredMessage, StoredQueue
    from broker_core.messages import Entry
    from broker_core.types import MessageStatus

    from ..commit_health import BatchStats

__all__ = ["PAGE_SIZE", "UNCLEAN_ID_GAP", "SQLiteStorage", "permanent_error"]

UNCLEAN_ID_GAP = 1 << 24
"""Ids skipped after an unclean stop: more than the write-behind buffer ever holds uncommitted."""
PAGE_SIZE = 1024
"""Bytes per page of a new database by default (SQLite's default is 4096).

Bodies are in segments (`storage.sqlite.segments`): rows hold state only,
and a commit writes each page it touches whole to the WAL. At 1,000 msg/s,
where nearly every message commits alone, 1 KiB pages wrote about 3 KiB
per message against 16 with 4 KiB pages (``python -m benchmarks.disk_writes``,
the README). A database made with another page size keeps it.
"""
_WAL_NET_BYTES = 32 * 1024 * 1024
"""The WAL size past which the writer checkpoints in a commit: a safety net.

The checkpointer copies the log in the background, but with commits
arriving all the time the log is never found fully copied when the next
transaction starts, so it would never start over. At this size the writer
checkpoints the little the checkpointer left, and the log starts over.
"""
_CHECKPOINT_INTERVAL_S = 1.0
"""The most time a commit waits in the WAL before the checkpointer copies it (and fsyncs).

A page that many commits rewrite in that time (the tail of the table and
of its indexes, a row published then acked) is copied to the database file
once. Traced (``strace`` of the end-to-end flow, 50,000 messages, bytes
per file): checkpoints every 0.1 s wrote 0.61 KiB per message into the
database file and 0.72 into the WAL; every 1 s, with ``secure_delete=FAST``
beside it, 0.44 and 0.70. With ``synchronous=NORMAL`` it is also how much a
power loss may take (NATS JetStream syncs every 2 minutes by default).
"""
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes the WAL file is trimmed to when it starts over (it is reused, not regrown, below that)."""
_SWEEP_INTERVAL_S = 30.0
"""The most often `SQLiteStorage.prune` looks for segments no row references any more."""
_WRITER_CACHE_BYTES = 8 * 1024 * 1024
"""The writer's page cache: the pages new rows go to and the recent rows acks rewrite."""
_READER_CACHE_BYTES = 8 * 1024 * 1024
"""The reader's page cache: cold bodies are read once, in id order."""


_TRANSIENT_CODES = frozenset(
    {
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY (remounted read-only, permissions: an operator fixes it)
        9,  # SQLITE_INTERRUPT
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
    }
)
"""Primary result codes of failures that may clear: the batch is retried until it commits."""


def permanent_error(exc: Exception) -> bool:
    """Whether a commit failed for a reason retrying the same batch can't fix.

    A full disk, a busy or locked file, an I/O error may clear; a violated
    constraint (two brokers on one file), bad data, a corrupt file or a bug
    fails the same way every time.
    """
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return not isinstance(exc, sqlite3.OperationalError)
        # Extended codes (SQLITE_IOERR_WRITE, ...) keep the primary one in the low byte.
        return code & 0xFF not in _TRANSIENT_CODES
    return not isinstance(exc, (OSError, MemoryError))


class SQLiteStorage:
    """Queues, messages, users and refresh tokens in one SQLite file (users: `accounts`).

    Writes go through one writer thread (`storage.sqlite.writer`): message
    operations in group-committed batches, everything else as calls
    between batches. Reads go through a second, read-only connection
    (aiosqlite), which WAL lets run beside a commit.

    Args:
        path: the database file (created with its directory's permissions).
        synchronous: ``"NORMAL"`` or ``"FULL"`` (see the module docstring).
        page_size: bytes per page if the database is new (see `PAGE_SIZE`).
        linger_ms: how long a small batch waits for company before committing.
        settle_linger_ms: how long settlements wait to commit with a publish
            (`storage.sqlite.writer.SETTLES`).
        max_batch: a batch this large commits without lingering.
        processed_retention_s: processed messages older than this are pruned.
        processed_retention_count: at most this many processed messages are kept per queue.
        accept_data_loss: open a database that lost committed writes (logged
            loudly; ids continue past the lost ones) instead of refusing it.
        inline_max: bodies up to this many bytes stay in their row; larger
            ones go to the segments (`storage.sqlite.segments`).
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        page_size: int = PAGE_SIZE,
        linger_ms: float = 0.0,
        settle_linger_ms: float = 50.0,
        max_batch: int = 512,
        processed_retention_s: float = 3600.0,
        processed_retention_count: int = 10_000,
        accept_data_loss: bool = False,
        inline_max: int = 0,
    ) -> None:
        self.path = path
        self.accept_data_loss = accept_data_loss
        self.synchronous = synchronous
        self.page_size = page_size
        self.processed_retention_s = processed_retention_s
        self.processed_retention_count = processed_retention_count
        self.inline_max = inline_max
        self._reader: aiosqlite.Connection | None = None
        self.watermark = CommitWatermark(path)
        self.bodies = SegmentLog(segments_path(path), fsync=synchronous.upper() == "FULL")
        self.checkpointer = Checkpointer(
            lambda: sqlite3.connect(self.path),
            interval_s=_CHECKPOINT_INTERVAL_S,
            before_checkpoint=self.bodies.sync,
            on_checkpoint=self.watermark.sync,
        )
        self._swept_at = 0.0
        self.writer = SQLiteWriter(
            self._connect_writer,
            self._write_batch,
            linger_s=linger_ms / 1000,
            settle_linger_s=settle_linger_ms / 1000,
            max_batch=max_batch,
            permanent=permanent_error,
        )
        self._accounts = SQLiteAccountStore(self.writer, lambda: self.reader)
        self.topics = SQLiteTopicStore(self.writer, lambda: self.reader)
        """Topics and their bindings, in the same file."""
        self.schedules = SQLiteScheduleStore(self.writer, lambda: self.reader)
        self.webhooks = SQLiteWebhookStore(self.writer, lambda: self.reader)
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
        """Bytes of the database file, its WAL and its body segments."""
        total = self.bodies.size_bytes()
        for suffix in ("", "-wal"):
            with suppress(OSError):
                total += self.path.with_name(self.path.name + suffix).stat().st_size
        return total

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read-only connection."""
        assert self._reader is not None, "open() first"
        return self._reader

    @property
    def is_open(self) -> bool:
        """Whether the database is open: from a successful `open` to `close` (or `crash`)."""
        return self._reader is not None

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> bool:
        """Open the database, apply the schema, recover; return whether the last stop was clean.

        Raises:
            StorageCorrupt: the file is not a SQLite database or fails its check
                (`StorageTooNew`: a newer release wrote it).
            CommittedDataMissing: the database lost writes it had committed
                (see `storage.sqlite.watermark`), and ``accept_data_loss`` is off.
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
        except StorageError:
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
            # This SQLite build zeroes each freed page (SECURE_DELETE): a prune
            # of N rows wrote their pages to the WAL and the database again.
            # FAST zeroes deleted content only on pages written anyway.
            connection.execute("PRAGMA secure_delete=FAST")
            connection.execute(f"PRAGMA cache_size={-_WRITER_CACHE_BYTES // 1024}")
            # Checkpoints run in their own thread (`.checkpointer`); this one is a net.
            (page_size,) = connection.execute("PRAGMA page_size").fetchone()
            connection.execute(f"PRAGMA wal_autocheckpoint={_WAL_NET_BYTES // page_size}")
            connection.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _prepare(self, db: sqlite3.Connection) -> bool:
        """Check, create or recognise the schema, read the meta rows, recover (writer thread)."""
        migrate(db, str(self.path))
        meta: dict[str, str] = dict(db.execute("SELECT key, value FROM meta").fetchall())
        clean = meta.get("clean", "1") == "1"
        # Batches record the highest id only when they delete rows: else the rows hold it.
        self._recorded_id = int(meta.get("last_id", 0))
        found = self._last_id = highest_committed_id(db)
        committed = self.watermark.read()
        if committed is not None and found < committed:
            if not self.accept_data_loss:
                raise CommittedDataMissing(str(self.path), found, committed)
            logger.error(
                "committed writes lost: serving what is left, as told (accept_data_loss)",
                database=str(self.path),
                last_id=found,
                committed_id=committed,
                missing_ids=committed - found,
            )
            # Lost ids may have been seen by clients: continue past them, as after a crash.
            self._last_id = committed
            clean = False
        self._horizon = DeliveryHorizon(
            int(meta.get("horizon_id", 0)), float(meta.get("horizon_at", 0))
        )
        if not self._recover_bodies(db):
            clean = False
        self._recover(db, clean)
        # What the database holds now: lower than the old watermark once a loss is accepted.
        self.watermark.open(found)
        return clean

    def _recover_bodies(self, db: sqlite3.Connection) -> bool:
        """Open the segments, cutting a torn tail; return whether every body referenced is there.

        The highest reference is looked for among the newest rows
        (`segments.HIGHEST_REF_SQL`).

        Raises:
            SegmentDataMissing: a committed row's body is not there whole,
                and ``accept_data_loss`` is off.
        """
        (highest,) = db.execute(HIGHEST_REF_SQL).fetchone()
        lost = self.bodies.recover(highest)
        if lost is None:
            return True
        segment, offset = unpack_ref(lost)
        if not self.accept_data_loss:
            raise SegmentDataMissing(str(self.path), segment, offset)
        with transaction(db):
            write_last_id(db, self._last_id)
            dropped = db.execute("DELETE FROM messages WHERE body_ref >= ?", (lost,)).rowcount
        self._recorded_id = self._last_id
        logger.error(
            "message bodies lost: their messages dropped, serving the rest, as told "
            "(accept_data_loss)",
            database=str(self.path),
            segment=segment,
            offset=offset,
            dropped=dropped,
        )
        return False

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
            await self.writer.call(self._mark_clean)
        await self._close_db()

    def _mark_clean(self, db: sqlite3.Connection) -> None:
        """Write the clean mark (writer thread)."""
        db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '1')")

    async def crash(self) -> None:
        """Stop as ``kill -9`` would (tests): what is buffered is dropped, no clean mark."""
        await self._close_db()

    async def _close_db(self) -> None:
        """Stop the writer (dropping what it still buffers, as a crash would) and the reader."""
        await self.writer.stop()
        self.checkpointer.stop()
        self.watermark.close()
        self.bodies.close()
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
        # Bodies reach their segment before the commit that references them.
        stage_bodies(plan.steps, self.bodies, self.inline_max)
        self.bodies.write()
        with transaction(db):
            for step in plan.steps:
                write_step(db, step)
            if record:
                write_last_id(db, plan.last_id)
        # Only once committed: a failed batch is retried and must write it again.
        if plan.last_id != self._last_id:
            # New ids committed: the WAL now holds them (`storage.sqlite.watermark`).
            self.watermark.record(plan.last_id)
        self._last_id = plan.last_id
        if record:
            self._recorded_id = plan.last_id

    def _record_last_id(self, db: sqlite3.Connection) -> None:
        """Commit the highest id to ``meta`` before a call deletes rows (autocommit mode)."""
        if self._recorded_id != self._last_id:
            write_last_id(db, self._last_id)
            self._recorded_id = self._last_id

    # -- start-up reads ---------------------------------------------------------

    async def last_message_id(self) -> int:
        """The highest message id ever stored (the highest row, or ``meta`` once rows went)."""
        return self._last_id

    async def load_queues(self) -> list[StoredQueue]:
        """Every queue with its options, processed count and failed count."""
        await self.writer.flush()
        return await self.writer.call(reads.load_queues)

    async def replay(self, queue: str, now: float, dedup_window_s: float = 0.0) -> ReplayedQueue:
        """Ids, priorities and sizes of ready messages in id order; delayed ones as entries."""
        return await reads.replay(self.reader, self._horizon, queue, now, dedup_window_s)

    # -- reads --------------------------------------------------------------------

    async def load_entries(self, ids: Sequence[int]) -> list[Entry]:
        """Entries (with bodies) of those ``ids`` that are still pending."""
        await self.writer.flush()
        return await reads.load_entries(self.reader, self.bodies, self._horizon, ids)

    async def get_message(self, id: int) -> StoredMessage | None:
        """One message by id, whatever its status."""
        await self.writer.flush()
        return await reads.get_message(self.reader, self.bodies, self._horizon, id)

    async def history(self, id: int) -> tuple[float, str | None] | None:
        """The ``created_at`` and stored history of message ``id`` (`broker_core.history`)."""
        await self.writer.flush()
        return await history.read_history(self.reader, id)

    async def result(self, id: int) -> bytes | None:
        """The result the ack of message ``id`` carried."""
        await self.writer.flush()
        return await history.read_result(self.reader, id)

    async def browse(
        self, queue: str, status: MessageStatus | None, limit: int, after: int | None
    ) -> list[StoredMessage]:
        """Messages of ``queue`` (of one status, or all) by ascending id after ``after``."""
        await self.writer.flush()
        return await reads.browse(
            self.reader, self.bodies, self._horizon, queue, status, limit, after
        )

    async def retryable_ids(self, queue: str, limit: int) -> list[int]:
        """Failed messages of ``queue`` and its dead-lettered pending ones, oldest first."""
        await self.writer.flush()
        return await reads.retryable_ids(self.reader, queue, limit)

    # -- retention ----------------------------------------------------------------

    async def prune_failed(self, before: float) -> dict[str, int]:
        """Delete failed messages settled before ``before``; return how many per queue."""
        await self.writer.flush()

        def prune(db: sqlite3.Connection) -> dict[str, int]:
            self._record_last_id(db)
            return pruning.prune_failed(db, before)

        return await self.writer.call(prune)

    async def prune(self, now: float) -> int:
        """Delete processed (and ended) messages past their retention time or count; how many.

        In batches (`storage.retention`); SQLite reuses the freed pages.
        """
        await self.writer.flush()
        deleted = await prune_in_batches(lambda: self.writer.call(partial(self._prune_batch, now)))
        await self.sweep_segments()
        return deleted

    async def sweep_segments(self, *, force: bool = False) -> list[int]:
        """Delete the segments no row references any more; return their numbers.

        A scan of every row (on the reader, beside commits), so at most once
        per `_SWEEP_INTERVAL_S` unless ``force``, and only when there is a
        segment before the current one. The current number is read before
        the scan: a segment before it takes no new reference, and every
        batch that appended to it has committed (the writer rolls over
        between batches), so the scan sees all its references.
        """
        now = time.monotonic()
        current = self.bodies.current
        if not force and now - self._swept_at < _SWEEP_INTERVAL_S:
            return []
        self._swept_at = now
        if not any(number < current for number in self.bodies.numbers()):
            return []
        live = await reads.live_segments(self.reader)
        return await self.writer.call(lambda _db: self.bodies.remove_unreferenced(live, current))

    def _prune_batch(self, now: float, db: sqlite3.Connection) -> tuple[int, bool]:
        self._record_last_id(db)
        return pruning.prune_batch(
            db, now, self.processed_retention_s, self.processed_retention_count
        )

"""The storage contract: every backend passes this suite, on real databases (no mocks).

The ``backend`` fixture is parametrized by backend name: ``sqlite`` on a file
in ``tmp_path``, ``postgres`` on a database created for this test run on the
local server (emptied before each test; skipped when no server answers).
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any, TypeAlias

import pytest

from broker_core.journal import (
    AckOp,
    DeadLetter,
    DeleteQueue,
    DeliverOp,
    Drop,
    Fail,
    Insert,
    Op,
    PurgeQueue,
    PutQueue,
    Requeue,
    Restore,
)
from broker_core.messages import Entry, QueueOptions
from broker_core.pending import unpack_cold
from broker_core.types import MessageStatus, Overflow
from storage import SQLiteStorage, StorageCorrupt, StorageUnavailable
from storage.retention import PRUNE_BATCH
from storage.sqlite import UNCLEAN_ID_GAP
from tests.storage.pg_database import reset_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from storage.postgres import PostgresStorage

Storage: TypeAlias = "SQLiteStorage | PostgresStorage"
"""The types the suite drives (both satisfy `storage.StorageBackend`)."""

NOW = time.time()


class Backend:
    """Builds storages of one kind on one location, simulates crashes and injects faults."""

    def __init__(self, kind: str, tmp_path: Path, url: str | None = None) -> None:
        self.kind = kind
        self.path = tmp_path / "broker.db"
        self.url = url
        self.opened: list[Storage] = []

    def make(self, **options: Any) -> Storage:
        if self.kind == "sqlite":
            return SQLiteStorage(self.path, **options)
        assert self.kind == "postgres" and self.url is not None, f"unknown backend {self.kind}"
        from storage.postgres import PostgresStorage

        return PostgresStorage(self.url, **options)

    async def open(self, **options: Any) -> Storage:
        storage = self.make(**options)
        await storage.open()
        self.opened.append(storage)
        return storage

    async def crash(self, storage: Storage) -> None:
        """Stop like ``kill -9`` after the last commit: no flush, no clean mark.

        PostgreSQL: the pool and the lock connection are dropped at once.
        """
        await storage.crash()

    async def set_schema_version(self, version: int) -> None:
        """Make the (empty) database claim schema ``version``."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as db:
                db.execute(f"PRAGMA user_version={version}")
            return
        await self._sql(
            "CREATE TABLE broker_schema_version (version integer NOT NULL); "
            f"INSERT INTO broker_schema_version VALUES ({version})"
        )

    async def fail_next_commit(
        self, storage: Storage, monkeypatch: pytest.MonkeyPatch, *, permanent: bool = False
    ) -> None:
        """Make the next batch that inserts a message fail at COMMIT, once.

        With ``permanent``, for a reason retrying can't fix (a constraint);
        else for one that may clear (an I/O error, a lost connection).
        PostgreSQL: a deferred constraint trigger on ``broker_messages``
        raises, or ends its own connection, at COMMIT; a sequence (not
        rolled back) makes it act only once.
        """
        if isinstance(storage, SQLiteStorage):
            writer = storage.writer
            real_commit = writer.commit
            failed: list[bool] = []

            def flaky_commit(db: sqlite3.Connection, ops: list[Op]) -> None:
                if not failed and any(isinstance(op, Insert) for op in ops):
                    failed.append(True)
                    if permanent:
                        raise sqlite3.IntegrityError("UNIQUE constraint failed: messages.id")
                    raise sqlite3.OperationalError("disk I/O error")
                real_commit(db, ops)

            monkeypatch.setattr(writer, "commit", flaky_commit)
            return
        fault = (
            "RAISE EXCEPTION 'injected commit failure'"
            if permanent
            else "PERFORM pg_terminate_backend(pg_backend_pid())"
        )
        await self._sql(
            "CREATE SEQUENCE fault_once; "
            "CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF nextval('fault_once') = 1 THEN {fault}; "
            "END IF; RETURN NULL; END $$; "
            "CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON broker_messages "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_once()"
        )

    async def _sql(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def only_sqlite(self, why: str) -> None:
        """Skip on PostgreSQL, where nodes share the database and ``why`` (cluster.py) holds."""
        if self.kind != "sqlite":
            pytest.skip(f"PostgreSQL: {why}")

    async def close_all(self) -> None:
        for storage in self.opened:
            await storage.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        await reset_database(url)
    backend = Backend(request.param, tmp_path, url)
    yield backend
    await backend.close_all()


@pytest.fixture
async def storage(backend: Backend) -> Storage:
    return await backend.open()


def entry(
    id: int,
    *,
    content: bytes = b'{"n": 1}',
    priority: int = 0,
    created_at: float = NOW,
    **fields: Any,
) -> Entry:
    return Entry(
        id,
        content=content,
        size=len(content),
        created_at=created_at,
        priority=priority,
        **fields,
    )


def put_queue(name: str = "q", **options: Any) -> PutQueue:
    return PutQueue(name, QueueOptions(**options), NOW, NOW)


async def write(storage: Storage, *ops: Op) -> None:
    """Write ``ops`` in one batch and wait for its commit."""
    await storage.write(list(ops))


async def status_of(storage: Storage, id: int) -> MessageStatus | None:
    row = await storage.get_message(id)
    return None if row is None else row.status


# -- lifecycle ------------------------------------------------------------------------------------


async def test_fresh_storage_opens_clean(backend: Backend) -> None:
    """A new database reports a clean last stop."""
    storage = backend.make()
    assert await storage.open() is True
    await storage.close()


async def test_reopen_after_close_is_clean(backend: Backend) -> None:
    """close() marks the stop clean."""
    storage = await backend.open()
    await write(storage, put_queue())
    await storage.close()
    again = backend.make()
    assert await again.open() is True
    await again.close()


async def test_reopen_after_crash_is_unclean(backend: Backend) -> None:
    """A stop without close() is reported once; the open after a clean close is clean again."""
    backend.only_sqlite("a node's crash is recovered by the others' reaper, not at open")
    storage = backend.make()
    await storage.open()
    await write(storage, put_queue())
    await backend.crash(storage)
    second = backend.make()
    assert await second.open() is False
    await second.close()
    third = backend.make()
    assert await third.open() is True
    await third.close()


async def test_close_twice_is_harmless(backend: Backend) -> None:
    """A second close() does nothing."""
    storage = backend.make()
    await storage.open()
    await storage.close()
    await storage.close()


async def test_reports_name_size_and_commit_counters(backend: Backend, storage: Storage) -> None:
    """The storage names its backend and counts its commits."""
    await write(storage, put_queue(), Insert("q", entry(1)))
    assert storage.name == backend.kind
    assert storage.degraded is None
    assert storage.size_bytes() > 0
    assert storage.batch_stats.batches >= 1
    assert storage.batch_stats.ops >= 2


async def test_garbage_file_is_storage_corrupt(backend: Backend) -> None:
    """A file that isn't a database raises StorageCorrupt and leaves nothing open."""
    if backend.kind != "sqlite":
        pytest.skip("a database file is SQLite's: postgres/test_store.py covers the server")
    backend.path.write_bytes(b"this is not a database, just some bytes " * 200)
    storage = backend.make()
    assert isinstance(storage, SQLiteStorage)
    with pytest.raises(StorageCorrupt) as caught:
        await storage.open()
    assert str(backend.path) in str(caught.value)
    assert not storage.is_open


async def test_unknown_schema_version_is_storage_corrupt(backend: Backend) -> None:
    """A database from a future version is refused."""
    await backend.set_schema_version(99)
    with pytest.raises(StorageCorrupt):
        await backend.make().open()


# -- queues ---------------------------------------------------------------------------------------


async def test_put_queue_round_trips_options(storage: Storage) -> None:
    """PutQueue stores a queue with its options and times."""
    options = QueueOptions(
        max_attempts=3,
        dead_letter_queue="dlq",
        message_ttl_ms=5000,
        max_length=10,
        max_bytes=1000,
        overflow=Overflow.DROP_HEAD,
        lease=12.5,
    )
    await write(storage, PutQueue("b", options, 1.0, 2.0), put_queue("a"))
    queues = await storage.load_queues()
    assert [q.name for q in queues] == ["a", "b"]
    b = queues[1]
    assert (b.options, b.created_at, b.updated_at, b.processed, b.failed) == (
        options,
        1.0,
        2.0,
        0,
        0,
    )


async def test_put_queue_again_updates_options_not_created_at(storage: Storage) -> None:
    """A second PutQueue changes options and updated_at, keeping created_at."""
    await write(storage, PutQueue("q", QueueOptions(), 1.0, 1.0))
    await write(storage, PutQueue("q", QueueOptions(max_attempts=2), 9.0, 5.0))
    [queue] = await storage.load_queues()
    assert (queue.options.max_attempts, queue.created_at, queue.updated_at) == (2, 1.0, 5.0)


async def test_load_queues_counts_processed_and_failed(storage: Storage) -> None:
    """Each queue comes back with its processed and failed counts."""
    await write(
        storage,
        put_queue("q"),
        put_queue("r"),
        Insert("q", entry(1)),
        Insert("q", entry(2)),
        Insert("q", entry(3)),
        Insert("r", entry(4)),
    )
    await write(storage, DeliverOp(1, 1, NOW), DeliverOp(2, 1, NOW), DeliverOp(4, 1, NOW))
    await write(storage, AckOp("q", 1, NOW), Fail("q", 2, "bad", NOW), AckOp("r", 4, NOW))
    counts = {q.name: (q.processed, q.failed) for q in await storage.load_queues()}
    assert counts == {"q": (1, 1), "r": (1, 0)}


async def test_delete_queue_removes_it_and_its_messages(storage: Storage) -> None:
    """DeleteQueue drops the queue and every message in it."""
    await write(storage, put_queue("q"), put_queue("r"), Insert("q", entry(1)))
    await write(storage, Insert("r", entry(2)), DeliverOp(1, 1, NOW), DeleteQueue("q"))
    assert [q.name for q in await storage.load_queues()] == ["r"]
    assert await storage.get_message(1) is None
    assert await status_of(storage, 2) is MessageStatus.PENDING


# -- messages -------------------------------------------------------------------------------------


async def test_insert_round_trips_every_field(storage: Storage) -> None:
    """An inserted message reads back with its body and metadata."""
    stored = entry(
        7,
        content=b'{"k": [1, 2]}',
        priority=4,
        created_at=100.5,
        headers={"trace": "abc"},
        deliver_at=NOW + 60,
        expires_at=NOW + 120,
        dedup_id="d-1",
    )
    await write(storage, put_queue(), Insert("q", stored))
    row = await storage.get_message(7)
    assert row is not None
    assert (row.queue, row.status) == ("q", MessageStatus.PENDING)
    got = row.entry
    assert (got.content, got.size, got.priority, got.created_at) == (
        b'{"k": [1, 2]}',
        13,
        4,
        100.5,
    )
    assert (got.headers, got.deliver_at, got.expires_at, got.dedup_id) == (
        {"trace": "abc"},
        NOW + 60,
        NOW + 120,
        "d-1",
    )
    assert (got.attempt, got.redelivered, got.lease_deadline) == (0, False, 0.0)
    assert (got.dead_lettered_from, got.last_error) == (None, None)


async def test_get_message_of_unknown_id_is_none(storage: Storage) -> None:
    """An id that was never stored reads as None."""
    assert await storage.get_message(404) is None


async def test_reads_see_writes_not_yet_awaited(storage: Storage) -> None:
    """A read waits for the writes before it (read your own writes)."""
    commit = storage.write([put_queue(), Insert("q", entry(1))])
    assert await status_of(storage, 1) is MessageStatus.PENDING
    assert commit.done()


async def test_deliver_marks_processing_with_attempt_and_lease(storage: Storage) -> None:
    """DeliverOp makes a message processing with its attempt and lease deadline."""
    await write(storage, put_queue(), Insert("q", entry(1)))
    await write(storage, DeliverOp(1, 1, NOW + 30))
    row = await storage.get_message(1)
    assert row is not None
    assert row.status is MessageStatus.PROCESSING
    assert (row.entry.attempt, row.entry.lease_deadline) == (1, NOW + 30)


async def test_requeue_makes_it_pending_and_redelivered(storage: Storage) -> None:
    """Requeue puts a message back to pending, marked redelivered."""
    await write(storage, put_queue(), Insert("q", entry(1)), DeliverOp(1, 1, NOW + 30))
    await write(storage, Requeue(1, 1, "q"))
    row = await storage.get_message(1)
    assert row is not None
    assert row.status is MessageStatus.PENDING
    assert (row.entry.attempt, row.entry.redelivered, row.entry.lease_deadline) == (1, True, 0.0)


async def test_ack_makes_it_processed(storage: Storage) -> None:
    """AckOp settles a message as processed and counts it for its queue."""
    await write(storage, put_queue(), Insert("q", entry(1)), DeliverOp(1, 1, NOW))
    await write(storage, AckOp("q", 1, NOW))
    assert await status_of(storage, 1) is MessageStatus.PROCESSED
    [queue] = await storage.load_queues()
    assert queue.processed == 1


async def test_fail_keeps_the_reason(storage: Storage) -> None:
    """Fail marks a message failed with its reason as last_error."""
    await write(storage, put_queue(), Insert("q", entry(1)), DeliverOp(1, 1, NOW))
    await write(storage, Fail("q", 1, "max_attempts", NOW))
    row = await storage.get_message(1)
    assert row is not None
    assert (row.status, row.entry.last_error) == (MessageStatus.FAILED, "max_attempts")


async def test_dead_letter_moves_it_to_the_target(storage: Storage) -> None:
    """DeadLetter moves a message to the target's pending with its history."""
    await write(
        storage,
        put_queue("q"),
        put_queue("dlq"),
        Insert("q", entry(1, dedup_id="x", expires_at=NOW - 5)),
    )
    await write(
        storage, DeliverOp(1, 2, NOW), Requeue(1, 2, "q"), DeadLetter(1, "q", "dlq", "expired")
    )
    row = await storage.get_message(1)
    assert row is not None
    assert (row.queue, row.status) == ("dlq", MessageStatus.PENDING)
    got = row.entry
    assert (got.attempt, got.redelivered, got.dedup_id) == (0, False, None)
    assert (got.dead_lettered_from, got.last_error) == ("q", "expired")
    assert got.expires_at == 0.0, "a dead-lettered message doesn't expire again"


async def test_drop_deletes_the_message(storage: Storage) -> None:
    """Drop deletes a stored message."""
    await write(storage, put_queue(), Insert("q", entry(1)))
    await write(storage, Drop(1))
    assert await storage.get_message(1) is None


async def test_a_drop_with_a_why_ends_the_message(backend: Backend) -> None:
    """Cancelled, expired, dropped: a body-less ``ENDED`` row with its history, counted nowhere."""
    from broker_core.history import History, decode

    storage = await backend.open()
    await write(storage, put_queue(), Insert("q", entry(1)), Insert("q", entry(3)))
    await write(
        storage,
        Drop(1, "cancelled", "admin"),
        Insert("q", entry(2)),
        Drop(2, "expired"),
        History([1, 2], ["5cadmin\n", "7e\n"]),
    )
    for id, why, event in ((1, "cancelled", "cancelled"), (2, "expired", "expired")):
        row = await storage.get_message(id)
        assert row is not None
        assert (row.status, row.entry.last_error, row.entry.content) == (
            MessageStatus.ENDED,
            why,
            b"null",
        )
        stored = await storage.history(id)
        assert stored is not None
        assert [e.event for e in decode(stored[1], stored[0])] == [event]
    assert [r.entry.id for r in await storage.browse("q", None, 10, None)] == [3]
    for status in MessageStatus:
        assert all(r.entry.id == 3 for r in await storage.browse("q", status, 10, None))
    [queue] = await storage.load_queues()
    assert (queue.processed, queue.failed) == (0, 0)
    assert await storage.retryable_ids("q", 10) == []
    if backend.kind == "sqlite":
        replayed = await storage.replay("q", NOW)
        assert [unpack_cold(item)[0] for item in replayed.cold] == [3]
        db = sqlite3.connect(backend.path)
        try:
            refs = db.execute("SELECT body_ref, content FROM messages WHERE status = 4").fetchall()
        finally:
            db.close()
        assert refs == [(None, b""), (None, b"")]


async def test_ended_messages_go_by_the_processed_retention(backend: Backend) -> None:
    """Pruning keeps the newest ``processed_retention_count`` ended ones, and none past the time."""
    storage = await backend.open(processed_retention_count=1, processed_retention_s=60)
    await write(storage, put_queue(), *(Insert("q", entry(i)) for i in (1, 2, 3)))
    await write(storage, *(Drop(i, "maxlen") for i in (1, 2, 3)))
    assert await storage.prune(time.time()) == 2
    assert [await storage.get_message(i) is None for i in (1, 2, 3)] == [True, True, False]
    [queue] = await storage.load_queues()
    assert queue.processed == 0
    assert await storage.prune(time.time() + 120) == 1
    assert await storage.get_message(3) is None


async def test_restore_moves_a_failed_message_back(storage: Storage) -> None:
    """Restore puts a failed or dead-lettered message in a queue's pending, attempt 0."""
    await write(
        storage,
        put_queue("q"),
        put_queue("dlq"),
        Insert("q", entry(1, expires_at=NOW - 1)),
        DeliverOp(1, 3, NOW),
        DeadLetter(1, "q", "dlq", "max_attempts"),
    )
    await write(storage, Restore(1, "q"))
    row = await storage.get_message(1)
    assert row is not None
    assert (row.queue, row.status) == ("q", MessageStatus.PENDING)
    assert (row.entry.attempt, row.entry.redelivered, row.entry.dead_lettered_from) == (
        0,
        False,
        None,
    )
    assert row.entry.expires_at == 0.0


async def test_purge_deletes_only_pending(storage: Storage) -> None:
    """PurgeQueue deletes pending (and delayed) messages of that queue only."""
    await write(
        storage,
        put_queue("q"),
        put_queue("r"),
        Insert("q", entry(1)),
        Insert("q", entry(2)),
        Insert("q", entry(3, deliver_at=NOW + 60)),
        Insert("q", entry(4)),
        Insert("r", entry(5)),
    )
    await write(storage, DeliverOp(1, 1, NOW), DeliverOp(4, 1, NOW), AckOp("q", 4, NOW))
    await write(storage, PurgeQueue("q"))
    statuses = [await status_of(storage, id) for id in (1, 2, 3, 4, 5)]
    assert statuses == [
        MessageStatus.PROCESSING,
        None,
        None,
        MessageStatus.PROCESSED,
        MessageStatus.PENDING,
    ]


# -- coalescing and ordering ----------------------------------------------------------------------


async def test_insert_deliver_ack_in_one_batch_is_one_processed_row(storage: Storage) -> None:
    """A message published, delivered and acked in one batch lands as processed, attempt 1."""
    await write(
        storage, put_queue(), Insert("q", entry(1)), DeliverOp(1, 1, NOW), AckOp("q", 1, NOW)
    )
    row = await storage.get_message(1)
    assert row is not None
    assert (row.status, row.entry.attempt) == (MessageStatus.PROCESSED, 1)
    [queue] = await storage.load_queues()
    assert queue.processed == 1


async def test_insert_and_drop_in_one_batch_leaves_nothing(storage: Storage) -> None:
    """A message dropped in the batch that inserted it is never stored."""
    await write(storage, put_queue(), Insert("q", entry(1)), Drop(1))
    assert await storage.get_message(1) is None
    if isinstance(storage, SQLiteStorage):  # PostgreSQL's ids come from the clock (ids.py)
        assert await storage.last_message_id() == 1


async def test_later_patches_win_within_a_batch(storage: Storage) -> None:
    """DeliverOp, Requeue, DeliverOp in one batch leave the last state."""
    await write(storage, put_queue(), Insert("q", entry(1)))
    await write(storage, DeliverOp(1, 1, NOW), Requeue(1, 1, "q"), DeliverOp(1, 2, NOW + 9))
    row = await storage.get_message(1)
    assert row is not None
    assert row.status is MessageStatus.PROCESSING
    assert (row.entry.attempt, row.entry.redelivered, row.entry.lease_deadline) == (
        2,
        True,
        NOW + 9,
    )


async def test_barriers_keep_their_place_in_a_batch(storage: Storage) -> None:
    """Insert, purge, insert in one batch: only the second insert survives."""
    await write(storage, put_queue(), Insert("q", entry(1)), PurgeQueue("q"), Insert("q", entry(2)))
    assert await storage.get_message(1) is None
    assert await status_of(storage, 2) is MessageStatus.PENDING


async def test_delete_then_recreate_in_one_batch(storage: Storage) -> None:
    """A queue deleted and created again in one batch exists, empty but for later inserts."""
    await write(storage, put_queue(), Insert("q", entry(1)))
    await write(storage, DeleteQueue("q"), put_queue(), Insert("q", entry(2)))
    assert [q.name for q in await storage.load_queues()] == ["q"]
    assert await storage.get_message(1) is None
    assert await status_of(storage, 2) is MessageStatus.PENDING


async def test_patch_after_barrier_applies_to_earlier_insert(storage: Storage) -> None:
    """An op after a barrier still finds a message inserted before it in the same batch."""
    await write(
        storage,
        put_queue(),
        Insert("q", entry(1)),
        put_queue("other"),
        DeliverOp(1, 1, NOW),
    )
    assert await status_of(storage, 1) is MessageStatus.PROCESSING


# -- start-up reads -------------------------------------------------------------------------------


async def test_last_message_id_tracks_the_highest_insert(storage: Storage) -> None:
    """last_message_id is the highest id ever inserted, 0 at first."""
    assert await storage.last_message_id() == 0
    await write(storage, put_queue(), Insert("q", entry(5)), Insert("q", entry(3)))
    assert await storage.last_message_id() == 5


async def test_last_message_id_survives_prune_and_reopen(backend: Backend) -> None:
    """Pruning processed messages never lets last_message_id go back."""
    backend.only_sqlite("ids are made from the clock and the node slot (broker_core.ids)")
    storage = await backend.open(processed_retention_count=0)
    await write(storage, put_queue(), *(Insert("q", entry(i)) for i in (1, 2, 3)))
    await write(storage, *(DeliverOp(i, 1, NOW) for i in (1, 2, 3)))
    await write(storage, *(AckOp("q", i, NOW) for i in (1, 2, 3)))
    assert await storage.prune(NOW) == 3
    await storage.close()
    again = await backend.open()
    assert await again.last_message_id() == 3


_REMOVALS: dict[str, list[Op]] = {
    "insert-and-drop-in-one-batch": [Insert("q", entry(4)), Drop(4)],
    "drop": [Drop(3)],
    "purge": [PurgeQueue("q")],
    "delete-queue": [DeleteQueue("q")],
}


@pytest.mark.parametrize("stop", ["close", "crash"])
@pytest.mark.parametrize("removal", list(_REMOVALS))
async def test_last_message_id_survives_losing_the_highest_row(
    backend: Backend, removal: str, stop: str
) -> None:
    """Whatever takes the highest message's row away, its id is never handed out again."""
    backend.only_sqlite("ids are made from the clock and the node slot (broker_core.ids)")
    storage = await backend.open()
    await write(storage, put_queue(), *(Insert("q", entry(i)) for i in (1, 2, 3)))
    ops = _REMOVALS[removal]
    highest = max([3, *(op.entry.id for op in ops if isinstance(op, Insert))])
    await write(storage, *ops)
    assert await storage.last_message_id() == highest
    if stop == "close":
        await storage.close()
    else:
        await backend.crash(storage)
        highest += UNCLEAN_ID_GAP
    again = await backend.open()
    assert await again.last_message_id() == highest


async def test_last_message_id_survives_pruning_the_failed(backend: Backend) -> None:
    """Deleting failed messages past their retention never lets the highest id go back."""
    backend.only_sqlite("ids are made from the clock and the node slot (broker_core.ids)")
    storage = await backend.open()
    await write(storage, put_queue(), *(Insert("q", entry(i)) for i in (1, 2, 3)))
    await write(storage, DeliverOp(3, 1, NOW), Fail("q", 3, "gave up", NOW))
    assert await storage.prune_failed(NOW + 1) == {"q": 1}
    await storage.close()
    again = await backend.open()
    assert await again.last_message_id() == 3


async def test_batches_that_only_add_rows_leave_the_highest_id_in_them(tmp_path: Path) -> None:
    """SQLite: ``meta`` is written only before rows go, not on every commit (a WAL page each)."""
    storage = SQLiteStorage(tmp_path / "broker.db")
    await storage.open()
    await write(storage, put_queue(), *(Insert("q", entry(i)) for i in (1, 2, 3)))
    await write(storage, DeliverOp(3, 1, NOW), AckOp("q", 3, NOW), Insert("q", entry(7)))
    with sqlite3.connect(tmp_path / "broker.db") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchall() == []
    await storage.close()
    again = SQLiteStorage(tmp_path / "broker.db")
    await again.open()
    try:
        assert await again.last_message_id() == 7
    finally:
        await again.close()


@pytest.mark.parametrize("permanent", [False, True], ids=["may_clear", "permanent"])
async def test_a_failed_commit_never_stores_its_publishes(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, permanent: bool
) -> None:
    """A publish whose batch failed at COMMIT is not stored, not even by a retry; later ones are."""
    storage = await backend.open()
    await write(storage, put_queue())
    await backend.fail_next_commit(storage, monkeypatch, permanent=permanent)
    with pytest.raises(StorageUnavailable):
        await storage.write([Insert("q", entry(1))])
    await write(storage, Insert("q", entry(2)))
    assert await status_of(storage, 1) is None
    assert await status_of(storage, 2) is MessageStatus.PENDING


@pytest.mark.parametrize("permanent", [False, True], ids=["may_clear", "permanent"])
async def test_a_failed_commit_keeps_its_settlements(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, permanent: bool
) -> None:
    """The acks of a batch that failed at COMMIT are written by its retry; its publishes are not."""
    storage = await backend.open()
    await write(storage, put_queue(), Insert("q", entry(1)))
    if storage.shared:
        await storage.claim("q", 1, NOW)  # type: ignore[union-attr]
    await backend.fail_next_commit(storage, monkeypatch, permanent=permanent)
    with pytest.raises(StorageUnavailable):
        await storage.write([DeliverOp(1, 1, NOW + 30), AckOp("q", 1, NOW), Insert("q", entry(2))])
    # Batches commit in order: once a later one has, what the failed one left has too.
    await write(storage, put_queue("later"))
    assert await status_of(storage, 1) is MessageStatus.PROCESSED
    assert await status_of(storage, 2) is None


async def test_a_publish_withdrawn_from_a_failed_commit_keeps_its_id_used(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The id of a publish that failed to commit is never made again after a restart."""
    backend.only_sqlite("ids are made from the clock and the node slot (broker_core.ids)")
    storage = await backend.open()
    await write(storage, put_queue())
    await backend.fail_next_commit(storage, monkeypatch)
    with pytest.raises(StorageUnavailable):
        await storage.write([Insert("q", entry(1))])
    await write(storage, put_queue("later"))
    await storage.close()
    again = await backend.open()
    assert await again.last_message_id() == 1


async def test_replay_returns_ready_ids_in_order_and_delayed_entries(storage: Storage) -> None:
    """replay gives ready pending messages as (id, priority, size) by id, delayed ones apart."""
    await write(
        storage,
        put_queue(),
        put_queue("other"),
        Insert("q", entry(1, priority=3)),
        Insert("q", entry(2, content=b"[]")),
        Insert("q", entry(3, deliver_at=NOW + 60, expires_at=NOW + 90)),
        Insert("other", entry(4)),
        Insert("q", entry(5)),
        Insert("q", entry(6)),
    )
    await write(storage, DeliverOp(5, 1, NOW), DeliverOp(6, 1, NOW), AckOp("q", 6, NOW))
    replayed = await storage.replay("q", NOW)
    assert [unpack_cold(item) for item in replayed.cold] == [(1, 3, 8), (2, 0, 2)]
    [delayed] = replayed.delayed
    assert (delayed.id, delayed.content, delayed.size) == (3, None, 8)
    assert (delayed.deliver_at, delayed.expires_at) == (NOW + 60, NOW + 90)


async def test_processing_comes_back_pending_and_redelivered(backend: Backend) -> None:
    """After a restart, a message that was processing is pending again, redelivered."""
    backend.only_sqlite("a node's leases come back when it leaves or is presumed dead")
    storage = await backend.open()
    await write(storage, put_queue(), Insert("q", entry(1)), Insert("q", entry(2)))
    await write(storage, DeliverOp(2, 1, NOW + 30))
    await storage.close()
    again = await backend.open()
    replayed = await again.replay("q", time.time())
    assert [unpack_cold(item)[0] for item in replayed.cold] == [1, 2]
    row = await again.get_message(2)
    assert row is not None
    assert (row.status, row.entry.redelivered, row.entry.attempt) == (
        MessageStatus.PENDING,
        True,
        1,
    )
    first = await again.get_message(1)
    assert first is not None
    assert first.entry.redelivered is False


async def test_unclean_stop_marks_ready_pending_redelivered(backend: Backend) -> None:
    """After a crash, ready pending messages come back redelivered; delayed ones don't."""
    backend.only_sqlite("a claim is committed before its delivery: no horizon is needed")
    storage = await backend.open()
    await write(
        storage,
        put_queue(),
        Insert("q", entry(1)),
        Insert("q", entry(2, deliver_at=time.time() + 3600)),
    )
    await backend.crash(storage)
    backend.opened.remove(storage)
    again = await backend.open()
    first, second = await again.get_message(1), await again.get_message(2)
    assert first is not None
    assert second is not None
    assert (first.entry.redelivered, second.entry.redelivered) == (True, False)


async def test_load_entries_returns_pending_bodies_only(storage: Storage) -> None:
    """load_entries gives full entries of the asked ids that are still pending."""
    await write(
        storage,
        put_queue(),
        Insert("q", entry(1, content=b'"a"', headers={"h": "v"})),
        Insert("q", entry(2)),
        Insert("q", entry(3)),
    )
    await write(storage, DeliverOp(2, 1, NOW), Drop(3))
    loaded = await storage.load_entries([3, 2, 1, 99])
    assert [(e.id, e.content, e.headers) for e in loaded] == [(1, b'"a"', {"h": "v"})]


async def test_load_entries_of_many_ids(storage: Storage) -> None:
    """load_entries handles more ids than one statement may bind."""
    count = 1200
    await write(storage, put_queue(), *(Insert("q", entry(i)) for i in range(1, count + 1)))
    loaded = await storage.load_entries(list(range(1, count + 1)))
    assert sorted(e.id for e in loaded) == list(range(1, count + 1))


async def test_browse_pages_by_id_with_status_filter(storage: Storage) -> None:
    """browse lists a queue's messages by id after a cursor, optionally of one status."""
    await write(
        storage,
        put_queue(),
        put_queue("other"),
        *(Insert("q", entry(i)) for i in range(1, 6)),
        Insert("other", entry(6)),
    )
    await write(storage, DeliverOp(2, 1, NOW), DeliverOp(4, 1, NOW), AckOp("q", 4, NOW))
    everything = await storage.browse("q", None, 10, None)
    assert [(r.entry.id, r.status) for r in everything] == [
        (1, MessageStatus.PENDING),
        (2, MessageStatus.PROCESSING),
        (3, MessageStatus.PENDING),
        (4, MessageStatus.PROCESSED),
        (5, MessageStatus.PENDING),
    ]
    page = await storage.browse("q", MessageStatus.PENDING, 2, None)
    assert [r.entry.id for r in page] == [1, 3]
    page = await storage.browse("q", MessageStatus.PENDING, 2, 3)
    assert [r.entry.id for r in page] == [5]
    assert await storage.browse("nope", None, 10, None) == []


async def test_retryable_ids_are_failed_and_dead_lettered(storage: Storage) -> None:
    """retryable_ids lists failed messages and dead-lettered pending ones, oldest first."""
    await write(
        storage,
        put_queue("q"),
        put_queue("dlq"),
        *(Insert("q", entry(i)) for i in range(1, 5)),
        Insert("dlq", entry(5)),
    )
    await write(storage, DeliverOp(1, 1, NOW), DeliverOp(2, 1, NOW), DeliverOp(3, 1, NOW))
    await write(storage, Fail("q", 3, "x", NOW), DeadLetter(1, "q", "dlq", "rejected"))
    await write(storage, Fail("q", 2, "y", NOW))
    assert await storage.retryable_ids("q", 10) == [2, 3]
    assert await storage.retryable_ids("dlq", 10) == [1]
    assert await storage.retryable_ids("q", 1) == [2]


# -- pruning --------------------------------------------------------------------------------------


async def test_prune_by_count_keeps_the_newest_processed(backend: Backend) -> None:
    """At most processed_retention_count processed messages stay per queue."""
    storage = await backend.open(processed_retention_count=2)
    ids = range(1, 6)
    await write(storage, put_queue(), *(Insert("q", entry(i)) for i in ids))
    await write(storage, *(DeliverOp(i, 1, NOW) for i in ids))
    await write(storage, *(AckOp("q", i, NOW) for i in ids if i != 5))
    assert await storage.prune(NOW) == 2
    remaining = await storage.browse("q", None, 10, None)
    assert [(r.entry.id, r.status) for r in remaining] == [
        (3, MessageStatus.PROCESSED),
        (4, MessageStatus.PROCESSED),
        (5, MessageStatus.PROCESSING),
    ]
    [queue] = await storage.load_queues()
    assert queue.processed == 4


async def test_one_prune_deletes_more_than_one_batch(backend: Backend) -> None:
    """A backlog of processed messages larger than a batch goes in one pass."""
    storage = await backend.open(processed_retention_count=0)
    ids = range(1, PRUNE_BATCH * 2 + 501)
    await write(storage, put_queue(), *(Insert("q", entry(i)) for i in ids))
    await write(storage, *(op for i in ids for op in (DeliverOp(i, 1, NOW), AckOp("q", i, NOW))))
    assert await storage.prune(NOW) == len(ids)
    assert await storage.browse("q", None, 10, None) == []


async def test_prune_by_age_deletes_old_processed(backend: Backend) -> None:
    """Processed messages settled before the retention time are deleted."""
    storage = await backend.open(processed_retention_s=60.0)
    await write(storage, put_queue(), *(Insert("q", entry(i)) for i in (1, 2, 3)))
    await write(storage, *(DeliverOp(i, 1, NOW) for i in (1, 2, 3)))
    await write(
        storage, AckOp("q", 1, NOW - 120), AckOp("q", 2, NOW - 10), Fail("q", 3, "x", NOW - 120)
    )
    assert await storage.prune(NOW) == 1
    assert [await status_of(storage, i) for i in (1, 2, 3)] == [
        None,
        MessageStatus.PROCESSED,
        MessageStatus.FAILED,
    ]


# -- users and refresh tokens ---------------------------------------------------------------------


async def test_users_put_get_list_delete(storage: Storage) -> None:
    """Users are stored as documents by username."""
    assert await storage.accounts.get_user("bob") is None
    await storage.accounts.put_user("bob", b'{"v": 1}')
    await storage.accounts.put_user("alice", b'{"v": 2}')
    await storage.accounts.put_user("bob", b'{"v": 3}')
    assert await storage.accounts.get_user("bob") == b'{"v": 3}'
    assert await storage.accounts.list_users() == [b'{"v": 2}', b'{"v": 3}']
    assert await storage.accounts.delete_user("bob") is True
    assert await storage.accounts.delete_user("bob") is False
    assert await storage.accounts.list_users() == [b'{"v": 2}']


async def test_users_survive_reopen(backend: Backend) -> None:
    """A stored user is there after a restart."""
    storage = await backend.open()
    await storage.accounts.put_user("bob", b"{}")
    await storage.close()
    again = await backend.open()
    assert await again.accounts.get_user("bob") == b"{}"


async def test_refresh_rotation_is_check_and_set(storage: Storage) -> None:
    """revoke_refresh succeeds once per token: the second rotation sees it revoked."""
    await storage.accounts.put_refresh("j1", "f1", "bob", NOW + 60)
    assert await storage.accounts.get_refresh("j1") == ("f1", "bob", NOW + 60, False)
    assert await storage.accounts.revoke_refresh("j1") is True
    assert await storage.accounts.revoke_refresh("j1") is False
    assert await storage.accounts.get_refresh("j1") == ("f1", "bob", NOW + 60, True)
    assert await storage.accounts.revoke_refresh("unknown") is False
    assert await storage.accounts.get_refresh("unknown") is None


async def test_revoke_family_revokes_every_token_of_it(storage: Storage) -> None:
    """revoke_family revokes the family's tokens and no others."""
    await storage.accounts.put_refresh("j1", "f1", "bob", NOW + 60)
    await storage.accounts.put_refresh("j2", "f1", "bob", NOW + 60)
    await storage.accounts.put_refresh("j3", "f2", "bob", NOW + 60)
    await storage.accounts.revoke_family("f1")
    revoked = [
        (await storage.accounts.get_refresh(j) or ("", "", 0.0, None))[3]
        for j in ("j1", "j2", "j3")
    ]
    assert revoked == [True, True, False]


async def test_revoke_user_tokens_and_delete_user(storage: Storage) -> None:
    """A user's tokens are revoked by revoke_user_tokens and by deleting the user."""
    await storage.accounts.put_refresh("j1", "f1", "bob", NOW + 60)
    await storage.accounts.put_refresh("j2", "f2", "amy", NOW + 60)
    await storage.accounts.put_refresh("j3", "f3", "cid", NOW + 60)
    await storage.accounts.put_user("cid", b"{}")
    await storage.accounts.revoke_user_tokens("bob")
    await storage.accounts.delete_user("cid")
    revoked = [
        (await storage.accounts.get_refresh(j) or ("", "", 0.0, None))[3]
        for j in ("j1", "j2", "j3")
    ]
    assert revoked == [True, False, True]


async def test_refresh_tokens_survive_reopen(backend: Backend) -> None:
    """Issued and revoked refresh tokens persist."""
    storage = await backend.open()
    await storage.accounts.put_refresh("j1", "f1", "bob", NOW + 60)
    await storage.accounts.revoke_refresh("j1")
    await storage.close()
    again = await backend.open()
    assert await again.accounts.get_refresh("j1") == ("f1", "bob", NOW + 60, True)

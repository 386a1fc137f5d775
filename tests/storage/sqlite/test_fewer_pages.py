"""Tests of what keeps a SQLite commit's pages few (schema 4): settlements and counts behind.

A real `SQLiteStorage` on a temporary file; what is committed is read back
with a second connection, as a restart would find it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING

from broker_core.journal import AckOp, DeleteQueue, DeliverOp, Insert
from storage import SQLiteStorage
from tests.storage.test_contract import NOW, entry, put_queue, write

if TYPE_CHECKING:
    from pathlib import Path


def _status(path: Path, id: int) -> int | None:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT status FROM messages WHERE id = ?", (id,)).fetchone()
    return None if row is None else int(row[0])


def _processed(path: Path, queue: str = "q") -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT processed FROM queues WHERE name = ?", (queue,)).fetchone()
    return int(count)


async def test_an_ack_waits_for_the_next_publish_then_commits_with_it(tmp_path: Path) -> None:
    """Settlements alone linger; a publish commits them with it, in one batch."""
    path = tmp_path / "broker.db"
    storage = SQLiteStorage(path, settle_linger_ms=5_000)
    await storage.open()
    try:
        await write(storage, put_queue(), Insert("q", entry(1)))
        batches = storage.batch_stats.batches
        _ = storage.write([DeliverOp(1, 1, NOW), AckOp("q", 1, NOW)])
        await asyncio.sleep(0.2)
        assert _status(path, 1) == 0, "the ack waits"
        await write(storage, Insert("q", entry(2)))
        assert _status(path, 1) == 2
        assert storage.batch_stats.batches == batches + 1
    finally:
        await storage.close()


async def test_settlements_commit_after_the_linger_without_a_publish(tmp_path: Path) -> None:
    """With no publish coming, settlements commit once they have waited ``settle_linger_ms``."""
    path = tmp_path / "broker.db"
    storage = SQLiteStorage(path, settle_linger_ms=100)
    await storage.open()
    try:
        await write(storage, put_queue(), Insert("q", entry(1)))
        started = time.monotonic()
        await storage.write([DeliverOp(1, 1, NOW), AckOp("q", 1, NOW)])
        assert time.monotonic() - started >= 0.09
        assert _status(path, 1) == 2
    finally:
        await storage.close()


async def test_a_read_does_not_wait_for_the_linger(tmp_path: Path) -> None:
    """A read flushes first: lingering settlements commit at once and the read sees them."""
    storage = SQLiteStorage(tmp_path / "broker.db", settle_linger_ms=10_000)
    await storage.open()
    try:
        await write(storage, put_queue(), Insert("q", entry(1)))
        _ = storage.write([DeliverOp(1, 1, NOW), AckOp("q", 1, NOW)])
        message = await asyncio.wait_for(storage.get_message(1), 2)
        assert message is not None and int(message.status) == 2
    finally:
        await storage.close()


async def test_processed_counts_rows_and_pruned_ones_after_a_crash(tmp_path: Path) -> None:
    """An ack writes no queue row; the count is the processed rows plus those pruned, exact."""
    path = tmp_path / "broker.db"
    storage = SQLiteStorage(path, settle_linger_ms=0, processed_retention_count=2)
    await storage.open()
    await write(storage, put_queue(), put_queue("r"), *(Insert("q", entry(i)) for i in range(1, 6)))
    for i in range(1, 6):
        await write(storage, DeliverOp(i, 1, NOW), AckOp("q", i, NOW))
    assert _processed(path) == 0
    assert {q.name: q.processed for q in await storage.load_queues()} == {"q": 5, "r": 0}
    assert await storage.prune(time.time()) == 3
    assert _processed(path) == 3
    await storage.crash()
    again = SQLiteStorage(path)
    await again.open()
    try:
        assert {q.name: q.processed for q in await again.load_queues()} == {"q": 5, "r": 0}
    finally:
        await again.close()


async def test_a_deleted_queue_made_again_counts_from_zero(tmp_path: Path) -> None:
    """A queue deleted and made again starts at 0."""
    storage = SQLiteStorage(tmp_path / "broker.db", settle_linger_ms=0)
    await storage.open()
    try:
        await write(storage, put_queue(), Insert("q", entry(1)))
        await write(storage, DeliverOp(1, 1, NOW), AckOp("q", 1, NOW))
        await write(storage, DeleteQueue("q"))
        await write(storage, put_queue())
        assert [q.processed for q in await storage.load_queues()] == [0]
    finally:
        await storage.close()


async def test_a_new_database_has_no_index_by_settled_time(tmp_path: Path) -> None:
    """Schema 4 drops ``messages_settled``; pruning still finds settled rows by queue."""
    path = tmp_path / "broker.db"
    storage = SQLiteStorage(path, processed_retention_s=0, settle_linger_ms=0)
    await storage.open()
    try:
        await write(storage, put_queue(), Insert("q", entry(1)), Insert("q", entry(2)))
        await write(storage, DeliverOp(1, 1, NOW), AckOp("q", 1, NOW))
        assert await storage.prune(time.time() + 1) == 1
        assert _status(path, 1) is None and _status(path, 2) == 0
    finally:
        await storage.close()
    with sqlite3.connect(path) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"messages_settled", "messages_by_queue"}.isdisjoint(names)
    assert {"messages_ready", "messages_processed", "messages_failed"} <= names

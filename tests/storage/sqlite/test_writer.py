"""Tests of `SQLiteWriter`: group commits pulled by the writer thread, and calls between them.

A real SQLite file; the commit function inserts each operation (an int) as
a row, and can be held behind a gate or made to fail the next attempts.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
from typing import TYPE_CHECKING, Any, cast

import pytest

from broker_core.errors import Unavailable
from storage import StorageUnavailable
from storage.sqlite.writer import SQLiteWriter
from tests.conftest import MS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from broker_core.journal import Op


class Table:
    """A commit function writing ints to a table; records batches, can gate and fail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.batches: list[list[int]] = []
        self.attempts = 0
        self.failures_left = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.threads: set[str] = set()

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute("CREATE TABLE IF NOT EXISTS ops (value INTEGER NOT NULL)")
        return connection

    def __call__(self, db: sqlite3.Connection, ops: list[Op]) -> None:
        self.attempts += 1
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        self.gate.wait(5)
        if self.failures_left:
            self.failures_left -= 1
            raise sqlite3.OperationalError("database or disk is full")
        values = cast("list[int]", ops)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO ops VALUES (?)", [(value,) for value in values])
        db.execute("COMMIT")
        self.batches.append(values)

    def stored(self) -> list[int]:
        with sqlite3.connect(self.path) as db:
            return [row[0] for row in db.execute("SELECT value FROM ops ORDER BY rowid")]


def ops(*values: int) -> list[Op]:
    return cast("list[Op]", list(values))


async def entered(table: Table) -> None:
    await asyncio.to_thread(table.entered.wait, 5)


@pytest.fixture
def table(tmp_path: Path) -> Table:
    return Table(tmp_path / "writer.db")


@pytest.fixture
async def writer(table: Table) -> AsyncIterator[SQLiteWriter]:
    writer = SQLiteWriter(table.connect, table)
    await writer.start()
    yield writer
    table.gate.set()
    table.failures_left = 0
    await writer.drain()
    await writer.stop()


async def test_write_resolves_once_committed(writer: SQLiteWriter, table: Table) -> None:
    """A write's future is done once its batch is in the database, written by the writer thread."""
    future = writer.write(ops(1, 2))
    await future
    assert table.stored() == [1, 2]
    assert table.threads == {"sqlite-writer"}
    assert (writer.stats.batches, writer.stats.ops) == (1, 2)


async def test_writes_during_a_commit_join_one_batch(writer: SQLiteWriter, table: Table) -> None:
    """Everything written while a commit runs is taken as the next single batch."""
    table.gate.clear()
    first = writer.write(ops(0))
    await entered(table)
    later = [writer.write(ops(i)) for i in range(1, 11)]
    assert all(f is later[0] for f in later)
    assert later[0] is not first
    table.gate.set()
    await asyncio.gather(first, *later)
    assert table.batches == [[0], list(range(1, 11))]


async def test_linger_gathers_a_burst(table: Table) -> None:
    """With linger_s, writes that arrive together commit in one batch."""
    writer = SQLiteWriter(table.connect, table, linger_s=50 * MS)
    await writer.start()
    futures = [writer.write(ops(i)) for i in range(5)]
    await asyncio.sleep(0)
    futures.append(writer.write(ops(5)))
    await asyncio.gather(*futures)
    assert table.batches == [[0, 1, 2, 3, 4, 5]]
    await writer.stop()


async def test_a_full_batch_skips_the_linger(table: Table) -> None:
    """A batch of max_batch operations commits without waiting for the linger."""
    writer = SQLiteWriter(table.connect, table, linger_s=10.0, max_batch=3)
    await writer.start()
    first = writer.write(ops(1))
    await asyncio.sleep(10 * MS)
    async with asyncio.timeout(1):
        await asyncio.gather(first, writer.write(ops(2, 3)))
    await writer.stop()


async def test_a_failed_commit_fails_its_batch_and_degrades(
    writer: SQLiteWriter, table: Table
) -> None:
    """A failing commit fails the batch's future with StorageUnavailable and sets degraded."""
    table.gate.clear()
    table.failures_left = 1
    future = writer.write(ops(1))
    await entered(table)
    with pytest.raises(StorageUnavailable) as caught:
        await future
    assert isinstance(caught.value, Unavailable)
    assert "disk is full" in str(caught.value)
    assert writer.degraded is not None
    assert "disk is full" in writer.degraded
    assert writer.stats.last_error == "OperationalError: database or disk is full"
    table.gate.set()


async def test_a_failed_batch_is_retried_until_it_commits(
    writer: SQLiteWriter, table: Table
) -> None:
    """The failed batch is retried and recovers; later batches follow in order."""
    table.failures_left = 2
    failed = writer.write(ops(1))
    with pytest.raises(StorageUnavailable):
        await failed
    await writer.write(ops(2))
    assert table.stored() == [1, 2]
    assert table.attempts == 4
    assert writer.degraded is None


async def test_flush_waits_for_everything_written(writer: SQLiteWriter, table: Table) -> None:
    """flush returns only once the committing and the open batch committed."""
    table.gate.clear()
    _ = writer.write(ops(1))
    await entered(table)
    _ = writer.write(ops(2))
    flushing = asyncio.ensure_future(writer.flush())
    await asyncio.sleep(5 * MS)
    assert not flushing.done()
    table.gate.set()
    await flushing
    assert table.batches == [[1], [2]]


async def test_nothing_written_resolves_at_once(writer: SQLiteWriter, table: Table) -> None:
    """An empty write and a flush of an idle writer don't wait for anything."""
    async with asyncio.timeout(1):
        await writer.write([])
        await writer.flush()
    assert table.batches == []


async def test_an_unawaited_failed_batch_is_not_reported(
    writer: SQLiteWriter, table: Table
) -> None:
    """A failed batch that nobody awaited doesn't log 'exception never retrieved'."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        table.failures_left = 1
        _ = writer.write(ops(1))
        await entered(table)
        await writer.write(ops(2))
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []


async def test_drain_commits_a_lingering_batch(table: Table) -> None:
    """drain() commits what is buffered at once, without waiting out the linger."""
    writer = SQLiteWriter(table.connect, table, linger_s=10.0)
    await writer.start()
    future = writer.write(ops(1, 2, 3))
    async with asyncio.timeout(2):
        await writer.drain()
    assert future.done()
    assert table.stored() == [1, 2, 3]
    await writer.stop()


async def test_calls_run_in_the_writer_thread(writer: SQLiteWriter, table: Table) -> None:
    """call() runs a function on the writer's connection and returns its result or error."""
    await writer.write(ops(7))
    count = await writer.call(lambda db: db.execute("SELECT count(*) FROM ops").fetchone()[0])
    assert count == 1
    name = await writer.call(lambda db: threading.current_thread().name)
    assert name == "sqlite-writer"
    with pytest.raises(sqlite3.OperationalError):
        await writer.call(lambda db: db.execute("SELECT * FROM missing"))
    await writer.write(ops(8))
    assert table.stored() == [7, 8]


async def test_stop_drops_what_is_buffered(table: Table) -> None:
    """stop() without drain leaves the database as a crash would: buffered writes are gone."""
    writer = SQLiteWriter(table.connect, table, linger_s=10.0)
    await writer.start()
    await writer.call(lambda db: None)
    lost = writer.write(ops(1))
    await writer.stop()
    assert table.stored() == []
    with pytest.raises(StorageUnavailable):
        await lost
    refused = writer.write(ops(2))
    with pytest.raises(StorageUnavailable):
        await refused
    with pytest.raises(StorageUnavailable):
        await writer.call(lambda db: None)


async def test_a_connection_that_fails_to_open_raises_at_start(tmp_path: Path) -> None:
    """start() raises the connection's error and leaves no thread behind."""

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(tmp_path / "missing" / "dir" / "x.db")

    writer = SQLiteWriter(connect, Table(tmp_path / "unused.db"))
    with pytest.raises(sqlite3.OperationalError):
        await writer.start()
    await writer.stop()
    assert not any(t.name == "sqlite-writer" for t in threading.enumerate())

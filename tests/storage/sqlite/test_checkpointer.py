"""Tests of the SQLite file: the checkpointer copies the WAL, which stays bounded; page size."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from broker_core.journal import AckOp, DeliverOp, Insert, Op, PutQueue
from broker_core.messages import Entry, QueueOptions
from broker_core.settings import Settings
from storage import SQLiteStorage, storage_from_settings
from storage.sqlite import PAGE_SIZE
from tests.conftest import MS

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path


BODY = b'"' + b"x" * 1022 + b'"'


async def test_commits_reach_the_database_file_without_checkpointing_in_a_commit(
    tmp_path: Path,
) -> None:
    """Below its safety net the writer doesn't checkpoint; the checkpointer copies the WAL."""
    path = tmp_path / "broker.db"
    # Bodies in their rows, so that the WAL is large enough to see copied.
    storage = SQLiteStorage(path, inline_max=len(BODY))
    await storage.open()
    try:
        autocheckpoint, page_size = await storage.writer.call(
            lambda db: (
                db.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
                db.execute("PRAGMA page_size").fetchone()[0],
            )
        )
        assert autocheckpoint * page_size > 16_000_000, "the writer checkpoints a large WAL only"
        before = path.stat().st_size
        await storage.write([PutQueue("q", QueueOptions(), time.time(), time.time())])
        for batch in range(8):
            first = batch * 1000 + 1
            await storage.write(
                [
                    Insert("q", Entry(id, content=BODY, size=len(BODY), created_at=time.time()))
                    for id in range(first, first + 1000)
                ]
            )
        checkpointer = storage.checkpointer
        for _ in range(250):
            if checkpointer.checkpoints and path.stat().st_size >= before + 8_000_000:
                break
            await asyncio.sleep(20 * MS)
        assert checkpointer.checkpoints >= 1
        assert path.stat().st_size >= before + 8_000_000, "the WAL never reached the file"
        assert len(await storage.browse("q", None, 10, 7990)) == 10
    finally:
        await storage.close()


async def test_the_wal_starts_over_under_continuous_commits(tmp_path: Path) -> None:
    """With a commit always on its way, the WAL still starts over instead of growing without end.

    60 MiB of messages published, delivered and acked in back-to-back
    batches: without the writer's own checkpoint past its safety net, the
    log is never found fully copied between two transactions and passes
    150 MB here.
    """
    path = tmp_path / "broker.db"
    wal = tmp_path / "broker.db-wal"
    # Bodies in their rows: 60 MiB of them pass through the WAL.
    storage = SQLiteStorage(path, inline_max=len(BODY))
    await storage.open()
    try:
        await storage.write([PutQueue("q", QueueOptions(), time.time(), time.time())])
        largest = 0
        previous: range = range(0)
        for batch in range(60):
            now = time.time()
            first = batch * 1000 + 1
            ops: list[Op] = [
                Insert("q", Entry(id, content=BODY, size=len(BODY), created_at=now))
                for id in range(first, first + 1000)
            ]
            for id in previous:
                ops += [DeliverOp(id, 1, now + 30), AckOp("q", id, now)]
            previous = range(first, first + 1000)
            await storage.write(ops)
            largest = max(largest, wal.stat().st_size)
        assert largest < 64_000_000, f"the WAL grew to {largest:,} bytes"
    finally:
        await storage.close()


async def _page_settings(storage: SQLiteStorage) -> tuple[int, int]:
    def read(db: sqlite3.Connection) -> tuple[int, int]:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        (autocheckpoint,) = db.execute("PRAGMA wal_autocheckpoint").fetchone()
        return page_size, autocheckpoint

    return await storage.writer.call(read)


async def test_a_new_database_has_large_pages(tmp_path: Path) -> None:
    """A new database is made with `PAGE_SIZE` pages; the WAL net is 32 MiB in pages of it."""
    storage = SQLiteStorage(tmp_path / "broker.db")
    await storage.open()
    try:
        assert await _page_settings(storage) == (PAGE_SIZE, 32 * 1024 * 1024 // PAGE_SIZE)
    finally:
        await storage.close()


async def test_the_page_size_of_a_new_database_is_a_setting(tmp_path: Path) -> None:
    """``BROKER_SQLITE_PAGE_SIZE`` reaches a new database (small pages for small commits)."""
    settings = Settings.from_env({"BROKER_SQLITE_PAGE_SIZE": "4096"}, data_dir=tmp_path)
    storage = storage_from_settings(settings)
    assert isinstance(storage, SQLiteStorage)
    await storage.open()
    try:
        assert await _page_settings(storage) == (4096, 32 * 1024 * 1024 // 4096)
    finally:
        await storage.close()


async def test_a_database_made_with_other_pages_keeps_them(tmp_path: Path) -> None:
    """A database made with 4 KiB pages keeps them, its data, and a WAL net of the same bytes."""
    path = tmp_path / "broker.db"
    storage = SQLiteStorage(path, page_size=4096)
    await storage.open()
    try:
        await storage.write([PutQueue("q", QueueOptions(), time.time(), time.time())])
        await storage.write(
            [Insert("q", Entry(1, content=BODY, size=len(BODY), created_at=time.time()))]
        )
    finally:
        await storage.close()
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        assert await _page_settings(storage) == (4096, 8192)
        assert [queue.name for queue in await storage.load_queues()] == ["q"]
        assert len(await storage.browse("q", None, 10, 0)) == 1
    finally:
        await storage.close()


async def test_a_prune_does_not_write_the_pages_it_frees(tmp_path: Path) -> None:
    """Pruning processed rows writes far fewer WAL frames than the pages it frees.

    This platform's SQLite zeroes each freed page (``SECURE_DELETE``): every
    page of the pruned rows went through the WAL and into the database again.
    The writer sets ``secure_delete=FAST``.
    """
    path = tmp_path / "broker.db"
    wal = tmp_path / "broker.db-wal"
    # Bodies in their rows: each pruned row frees about a page.
    storage = SQLiteStorage(path, inline_max=len(BODY), processed_retention_count=0)
    await storage.open()
    try:
        now = time.time()
        await storage.write([PutQueue("q", QueueOptions(), now, now)])
        # Published and acked in one batch: one insert of a processed row each.
        ops: list[Op] = []
        for id in range(1, 2001):
            ops += [
                Insert("q", Entry(id, content=BODY, size=len(BODY), created_at=now)),
                DeliverOp(id, 1, now + 30),
                AckOp("q", id, now),
            ]
        await storage.write(ops)

        def restart_wal(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

        await storage.writer.call(restart_wal)
        assert wal.stat().st_size == 0
        assert await storage.prune(now + 1) == 2000

        def freed(db: sqlite3.Connection) -> tuple[int, int]:
            return (
                db.execute("PRAGMA freelist_count").fetchone()[0],
                db.execute("PRAGMA page_size").fetchone()[0],
            )

        pages, page_size = await storage.writer.call(freed)
        frames = wal.stat().st_size // (page_size + 24)
        assert pages >= 2000
        assert frames < pages // 4, f"{frames} WAL frames for {pages} freed pages"
    finally:
        await storage.close()

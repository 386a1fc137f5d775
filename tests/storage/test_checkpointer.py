"""Tests of the SQLite checkpointer: the WAL reaches the database file while the broker runs."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from broker_core.journal import Insert, PutQueue
from broker_core.messages import Entry, QueueOptions
from storage import SQLiteStorage
from tests.conftest import MS

if TYPE_CHECKING:
    from pathlib import Path

BODY = b'"' + b"x" * 1022 + b'"'


async def test_commits_reach_the_database_file_without_checkpointing_in_a_commit(
    tmp_path: Path,
) -> None:
    """The writer never checkpoints; the checkpointer copies the WAL into the file meanwhile."""
    path = tmp_path / "broker.db"
    storage = SQLiteStorage(path)
    await storage.open()
    try:
        autocheckpoint = await storage.writer.call(
            lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert autocheckpoint == 0
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

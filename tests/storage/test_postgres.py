"""What only the PostgreSQL backend does: the one-node lock, server errors, schema version, size."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from broker_core.journal import Insert, PutQueue
from broker_core.messages import Entry, QueueOptions
from broker_core.settings import Settings
from storage import (
    StorageCorrupt,
    StorageInUse,
    StorageUnavailable,
    StorageUnreachable,
    storage_from_settings,
)
from tests.storage.pg_database import reset_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

asyncpg = pytest.importorskip("asyncpg", reason="the postgres backend needs asyncpg")

from storage.postgres import LOCK_KEY, PostgresStorage, check_postgres  # noqa: E402

pytestmark = pytest.mark.postgres

NOW = time.time()


@pytest.fixture
async def url(postgres_url: str) -> str:
    """The test run's database, emptied."""
    await reset_database(postgres_url)
    return postgres_url


@pytest.fixture
async def storage(url: str) -> AsyncIterator[PostgresStorage]:
    """An open storage on the emptied database; closed after the test."""
    storage = PostgresStorage(url)
    await storage.open()
    yield storage
    await storage.close()


async def test_second_node_is_refused_while_the_first_holds_the_database(
    url: str, storage: PostgresStorage
) -> None:
    """open() raises StorageInUse while another storage holds the advisory lock."""
    second = PostgresStorage(url)
    with pytest.raises(StorageInUse) as caught:
        await second.open()
    assert "another broker node" in str(caught.value)
    await storage.close()
    assert await second.open() is True
    await second.close()


async def test_unreachable_server_is_one_line_without_the_password() -> None:
    """A server that doesn't answer raises StorageUnreachable, one line, no password."""
    storage = PostgresStorage("postgresql://bob:s3cret@127.0.0.1:1/broker?password=s3cret")
    with pytest.raises(StorageUnreachable) as caught:
        await storage.open()
    message = str(caught.value)
    assert "\n" not in message
    assert "s3cret" not in message
    assert "postgresql://bob@127.0.0.1:1/broker" in message


async def test_open_records_the_schema_version(url: str, storage: PostgresStorage) -> None:
    """A fresh database gets the schema and version 1 in broker_schema_version."""
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT version FROM broker_schema_version") == 1
    finally:
        await conn.close()


async def test_check_postgres_refuses_a_held_database(url: str, storage: PostgresStorage) -> None:
    """The CLI's preflight says the database is in use while a node holds it."""
    with pytest.raises(StorageInUse):
        await check_postgres(url)
    await storage.close()
    await check_postgres(url)


async def test_check_postgres_refuses_an_unknown_schema_version(url: str) -> None:
    """The preflight refuses a database whose schema is from a future version."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE broker_schema_version (version integer NOT NULL); "
            "INSERT INTO broker_schema_version VALUES (2)"
        )
    finally:
        await conn.close()
    with pytest.raises(StorageCorrupt):
        await check_postgres(url)


async def test_size_bytes_grows_with_the_data(storage: PostgresStorage) -> None:
    """size_bytes is the tables' total size, refreshed in the background."""
    before = storage.size_bytes()
    assert before > 0
    body = b"x" * 2000
    await storage.write(
        [
            PutQueue("q", QueueOptions(), NOW, NOW),
            *(
                Insert("q", Entry(i, content=body, size=len(body), created_at=NOW))
                for i in range(1, 501)
            ),
        ]
    )
    storage._size_at = 0.0  # stale now
    storage.size_bytes()
    assert storage._size_task is not None
    await storage._size_task
    assert storage.size_bytes() > before


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_settings_with_a_postgres_url_build_postgres_storage(scheme: str, tmp_path: Path) -> None:
    """Both URL schemes select the PostgreSQL backend, with the write-behind settings."""
    settings = Settings(
        data_dir=tmp_path,
        storage_url=f"{scheme}://postgres@127.0.0.1:5432/test",
        flush_max_ops=64,
    )
    storage = storage_from_settings(settings)
    assert isinstance(storage, PostgresStorage)
    assert storage.name == "postgres"
    assert storage._buffer.max_batch == 64


async def _until(condition: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def _kill_lock_session(url: str, storage: PostgresStorage) -> None:
    pid = storage._lock_conn.get_server_pid()
    admin = await asyncpg.connect(url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_lost_lock_is_taken_again(url: str, storage: PostgresStorage) -> None:
    """When the lock's session dies, the storage takes the lock again and writes go on."""
    await _kill_lock_session(url, storage)
    await _until(lambda: not storage._locked, "the loss is seen")
    await _until(lambda: storage._locked, "the lock is back")
    assert storage.degraded is None
    await storage.write([PutQueue("q", QueueOptions(), NOW, NOW)])
    assert [q.name for q in await storage.load_queues()] == ["q"]


async def test_no_write_commits_while_another_node_holds_the_lock(
    url: str, storage: PostgresStorage
) -> None:
    """A node that lost its lock to another refuses writes until it holds the lock again."""
    other = await asyncpg.connect(url)
    try:
        # Queued behind the storage's lock: granted the moment its session ends.
        taken = asyncio.ensure_future(other.execute("SELECT pg_advisory_lock($1)", LOCK_KEY))
        await asyncio.sleep(0.1)
        await _kill_lock_session(url, storage)
        await taken
        await _until(lambda: storage.degraded is not None, "the storage is degraded")
        assert "lost the node lock" in (storage.degraded or "")
        with pytest.raises(StorageUnavailable):
            await storage.write([PutQueue("q", QueueOptions(), NOW, NOW)])
        assert await storage.load_queues() == []
    finally:
        await other.close()
    await _until(lambda: storage.degraded is None, "the lock is back and the batch committed")
    assert [q.name for q in await storage.load_queues()] == ["q"]

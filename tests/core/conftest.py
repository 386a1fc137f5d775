"""Fixtures of the asyncio core tests: a real SQLite storage and broker on ``tmp_path``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from broker_core.broker import Broker
from storage import SQLiteStorage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's SQLite database lives."""
    return tmp_path / "broker.db"


@pytest.fixture
async def storage(db_path: Path) -> AsyncIterator[SQLiteStorage]:
    """An open SQLite storage on a fresh file; closed after the test."""
    storage = SQLiteStorage(db_path)
    await storage.open()
    yield storage
    await storage.close()


@pytest.fixture
async def broker(db_path: Path) -> AsyncIterator[Broker]:
    """A started broker over a fresh SQLite file; closed after the test."""
    broker = Broker(SQLiteStorage(db_path))
    await broker.start()
    yield broker
    await broker.close()

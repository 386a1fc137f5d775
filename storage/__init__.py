"""Persistence behind the `broker_core.journal.Storage` protocol.

`SQLiteStorage` is the embedded default; `open_storage` picks a backend from a URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import StorageCorrupt, StorageError, StorageUnavailable
from .sqlite import SQLiteStorage, check_database
from .write_behind import WriteBehind

if TYPE_CHECKING:
    from broker_core.settings import Settings

__all__ = [
    "SQLiteStorage",
    "StorageCorrupt",
    "StorageError",
    "StorageUnavailable",
    "WriteBehind",
    "check_database",
    "storage_from_settings",
]


def storage_from_settings(settings: Settings) -> SQLiteStorage:
    """Build the storage backend that ``settings.storage_url`` names (SQLite by default)."""
    url = settings.storage_url
    if url and url.startswith(("postgresql://", "postgres://")):
        raise NotImplementedError("the PostgreSQL backend is not built yet")
    path = Path(url.removeprefix("sqlite:///")) if url else settings.sqlite_path
    return SQLiteStorage(
        path,
        synchronous=settings.sqlite_synchronous,
        linger_ms=settings.flush_interval_ms,
        max_batch=settings.flush_max_ops,
        processed_retention_s=settings.processed_retention_s,
        processed_retention_count=settings.processed_retention_count,
    )

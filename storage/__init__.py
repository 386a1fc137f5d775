"""Persistence behind the `broker_core.journal.Storage` protocol.

`SQLiteStorage` (``storage.sqlite``) is the embedded default;
`PostgresStorage` (``storage.postgres``, needs ``pip install '.[postgres]'``)
serves ``postgresql://`` URLs. `storage_from_settings` picks the backend
from the settings. Each backend is a package holding its store, its writer,
its schema and its migrations; what both share sits here once: coalescing
(`storage.coalesce`), the row mapping (`storage.rows`), the retention rules
(`storage.retention`), commit health (`storage.commit_health`) and the
account store's protocol (`storage.accounts`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from .accounts import AccountStore, RefreshRow
from .backend import StorageBackend
from .errors import (
    CommittedDataMissing,
    StorageCorrupt,
    StorageError,
    StorageTooNew,
    StorageUnavailable,
    StorageUnreachable,
)
from .postgres.writer import WriteBehind
from .sqlite import SQLiteStorage, check_database
from .sqlite.segments import check_bodies
from .sqlite.watermark import check_committed

if TYPE_CHECKING:
    from broker_core.settings import Settings

__all__ = [
    "AccountStore",
    "CommittedDataMissing",
    "RefreshRow",
    "SQLiteStorage",
    "StorageBackend",
    "StorageCorrupt",
    "StorageError",
    "StorageTooNew",
    "StorageUnavailable",
    "StorageUnreachable",
    "WriteBehind",
    "check_database",
    "check_storage",
    "is_postgres_url",
    "sqlite_database",
    "storage_from_settings",
]


def is_postgres_url(url: str | None) -> TypeGuard[str]:
    """Whether ``url`` names a PostgreSQL database."""
    return url is not None and url.startswith(("postgresql://", "postgres://"))


def sqlite_database(settings: Settings) -> Path | None:
    """The SQLite database file the settings name, or ``None`` for PostgreSQL."""
    url = settings.storage_url
    if is_postgres_url(url):
        return None
    return Path(url.removeprefix("sqlite:///")) if url else settings.sqlite_path


def storage_from_settings(settings: Settings) -> StorageBackend:
    """Build the storage backend that ``settings.storage_url`` names (SQLite by default).

    ``postgresql://`` and ``postgres://`` URLs build a `PostgresStorage`
    (asyncpg is imported only then); ``sqlite:///path`` or no URL a
    `SQLiteStorage`.

    Raises:
        StorageError: a PostgreSQL URL, but asyncpg is not installed.
    """
    url = settings.storage_url
    path = sqlite_database(settings)
    if path is None:
        assert is_postgres_url(url), "not SQLite, so PostgreSQL"
        return _postgres_storage(url, settings)
    return SQLiteStorage(
        path,
        synchronous=settings.sqlite_synchronous,
        page_size=settings.sqlite_page_size,
        linger_ms=settings.flush_interval_ms,
        settle_linger_ms=settings.sqlite_settle_linger_ms,
        max_batch=settings.flush_max_ops,
        processed_retention_s=settings.processed_retention_s,
        processed_retention_count=settings.processed_retention_count,
        accept_data_loss=settings.accept_data_loss,
    )


def _postgres_storage(url: str, settings: Settings) -> StorageBackend:
    _require_asyncpg()
    from .postgres import PostgresStorage

    return PostgresStorage(
        url,
        node_name=settings.node_name or f"{socket.gethostname()}:{settings.port}",
        node_timeout_s=settings.node_timeout_s,
        poll_s=settings.cluster_poll_s,
        linger_ms=settings.flush_interval_ms,
        settle_linger_ms=settings.postgres_settle_linger_ms,
        max_batch=settings.flush_max_ops,
        processed_retention_s=settings.processed_retention_s,
        processed_retention_count=settings.processed_retention_count,
    )


def _require_asyncpg() -> None:
    """asyncpg is an optional dependency: say how to get it instead of an ImportError."""
    if importlib.util.find_spec("asyncpg") is None:
        raise StorageError("the PostgreSQL backend needs asyncpg: pip install 'wsbroker[postgres]'")


def check_storage(settings: Settings) -> None:
    """Fail fast, before serving, when the configured storage can't be opened.

    For SQLite, `check_database` on the file, then that it holds every id
    its commit watermark says was committed (`storage.sqlite.watermark`).
    For PostgreSQL, connect and check that its schema is known. Nothing is
    written.

    Raises:
        StorageError: with a one-line reason (`StorageCorrupt`, `StorageTooNew`,
            `CommittedDataMissing`, `StorageUnreachable`).
    """
    url = settings.storage_url
    if is_postgres_url(url):
        _require_asyncpg()
        from .postgres import check_postgres

        asyncio.run(check_postgres(url))
    else:
        database = sqlite_database(settings)
        assert database is not None, "not PostgreSQL, so SQLite"
        check_database(database)
        check_committed(database, accept_loss=settings.accept_data_loss)
        check_bodies(database, accept_loss=settings.accept_data_loss)

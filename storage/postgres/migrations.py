"""The PostgreSQL schema's version: created or migrated at open, by one node at a time.

The version lives in ``broker_schema_version``. Version 1 is ``schema.sql``;
version ``n`` adds ``schema_<n>.sql``, applied in order from the stored
version up to `SCHEMA_VERSION`, all in one transaction. From version 3 the
table holds one row per step with the time and release that applied it, as
on SQLite (``storage.sqlite.migrations``); the version is the highest row.
A database from a newer release is refused before anything is written
(`storage.errors.StorageTooNew`).
"""

from __future__ import annotations

import time
from importlib import resources
from typing import TYPE_CHECKING

import asyncpg
from loguru import logger

from ..errors import StorageCorrupt, StorageTooNew, StorageUnreachable
from ..release import release
from .connection import APPLICATION, CONNECT_TIMEOUT_S, connect, display_url, reason

if TYPE_CHECKING:
    from typing import Any

__all__ = ["SCHEMA_VERSION", "check_postgres", "migrate"]

SCHEMA_VERSION = 10
"""Version 1 is ``schema.sql``; version ``n`` adds ``schema_<n>.sql``."""
_HISTORY_SINCE = 3
"""The first version whose table has a row per step, with its time and release."""
_MIGRATION_LOCK = int.from_bytes(b"wsbmigra", "big")


def _schema_file(version: int) -> str:
    """The SQL of schema version ``version`` (1: the schema; later: the migration to it)."""
    name = "schema.sql" if version == 1 else f"schema_{version}.sql"
    return resources.files(__package__).joinpath(name).read_text()


def _known(version: int | None, where: str) -> int:
    """The stored ``version``, checked against this release."""
    if version is not None and version > SCHEMA_VERSION:
        raise StorageTooNew(where, version, SCHEMA_VERSION)
    if version is None or version < 1:
        raise StorageCorrupt(where, f"unknown schema version {version}")
    return version


async def migrate(conn: Any, where: str) -> None:
    """Create the schema, or migrate it to `SCHEMA_VERSION`, in one transaction on ``conn``.

    Raises:
        StorageTooNew: a newer release wrote the schema (nothing was written).
        StorageCorrupt: the schema is from an unknown version.
    """
    applied: dict[int, float] = {}
    async with conn.transaction():
        # Nodes started together: one creates or migrates, the others then see it done.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        if not await conn.fetchval("SELECT to_regclass('broker_schema_version') IS NOT NULL"):
            await conn.execute(_schema_file(1))
            await conn.execute("INSERT INTO broker_schema_version (version) VALUES (1)")
            version = 1
            applied[1] = time.time()
            logger.info("database schema created", database=where)
        else:
            stored = await conn.fetchval("SELECT max(version) FROM broker_schema_version")
            version = _known(stored, where)
        for step in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(_schema_file(step))
            applied[step] = time.time()
            if step < _HISTORY_SINCE:
                await conn.execute("INSERT INTO broker_schema_version (version) VALUES ($1)", step)
        if applied and SCHEMA_VERSION >= _HISTORY_SINCE:
            # Every version gets its row; the ones applied now their time and release.
            await conn.executemany(
                "INSERT INTO broker_schema_version (version, applied_at, release) "
                "VALUES ($1, $2, $3) ON CONFLICT (version) DO UPDATE SET "
                "applied_at = excluded.applied_at, release = excluded.release "
                "WHERE excluded.applied_at IS NOT NULL",
                [
                    (v, applied.get(v), release() if v in applied else None)
                    for v in range(1, SCHEMA_VERSION + 1)
                ],
            )
        if version != SCHEMA_VERSION and 1 not in applied:
            logger.info("database schema migrated", database=where, version=SCHEMA_VERSION)


async def check_postgres(url: str) -> None:
    """Check, without writing, that a node could open the database at ``url`` now.

    Raises:
        StorageUnreachable: the server can't be connected to.
        StorageTooNew: a newer release wrote its schema.
        StorageCorrupt: its schema is from an unknown version.
    """
    where = display_url(url)
    try:
        conn = await connect(url, APPLICATION)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageUnreachable(where, reason(exc)) from exc
    try:
        if await conn.fetchval("SELECT to_regclass('broker_schema_version') IS NOT NULL"):
            version = await conn.fetchval("SELECT max(version) FROM broker_schema_version")
            _known(version, where)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageUnreachable(where, reason(exc)) from exc
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)

"""The PostgreSQL schema's version: created or migrated at open, by one node at a time.

The version lives in ``broker_schema_version``. Version 1 is ``schema.sql``;
version ``n`` adds ``schema_<n>.sql``, applied in order from the stored
version up to `SCHEMA_VERSION`.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

import asyncpg
from loguru import logger

from ..errors import StorageCorrupt, StorageUnreachable
from .connection import APPLICATION, CONNECT_TIMEOUT_S, connect, display_url, reason

if TYPE_CHECKING:
    from typing import Any

__all__ = ["SCHEMA_VERSION", "check_postgres", "migrate"]

SCHEMA_VERSION = 2
"""Version 1 is ``schema.sql``; version ``n`` adds ``schema_<n>.sql``."""
_MIGRATION_LOCK = int.from_bytes(b"wsbmigra", "big")


def _schema_file(version: int) -> str:
    """The SQL of schema version ``version`` (1: the schema; later: the migration to it)."""
    name = "schema.sql" if version == 1 else f"schema_{version}.sql"
    return resources.files(__package__).joinpath(name).read_text()


async def migrate(conn: Any, where: str) -> None:
    """Create the schema, or migrate it to `SCHEMA_VERSION`, in one transaction on ``conn``.

    Raises:
        StorageCorrupt: the schema is from an unknown version.
    """
    async with conn.transaction():
        # Nodes started together: one creates or migrates, the others then see it done.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        if not await conn.fetchval("SELECT to_regclass('broker_schema_version') IS NOT NULL"):
            await conn.execute(_schema_file(1))
            await conn.execute("INSERT INTO broker_schema_version VALUES (1)")
            version = 1
            logger.info("database schema created", database=where)
        else:
            version = await conn.fetchval("SELECT max(version) FROM broker_schema_version")
            if version is None or not 1 <= version <= SCHEMA_VERSION:
                raise StorageCorrupt(where, f"unknown schema version {version}")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(_schema_file(step))
        if version != SCHEMA_VERSION:
            await conn.execute("UPDATE broker_schema_version SET version = $1", SCHEMA_VERSION)
            logger.info("database schema migrated", database=where, version=SCHEMA_VERSION)


async def check_postgres(url: str) -> None:
    """Check, without writing, that a node could open the database at ``url`` now.

    Raises:
        StorageUnreachable: the server can't be connected to.
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
            if version is None or not 1 <= version <= SCHEMA_VERSION:
                raise StorageCorrupt(where, f"unknown schema version {version}")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageUnreachable(where, reason(exc)) from exc
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)

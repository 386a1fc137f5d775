"""Throwaway PostgreSQL databases on the local server, for the postgres tests.

The server is ``BROKER_TEST_POSTGRES_URL`` (default: the local one on
127.0.0.1:5432, trust auth); each test run creates ``broker_test_<random>``
there and drops it at the end. When no server answers, the tests that need
one are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterator

__all__ = ["ADMIN_URL", "reset_database", "temporary_database"]

ADMIN_URL = os.environ.get("BROKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""A database on the server to connect to while creating and dropping the test databases."""


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run ``coroutine`` to completion on a loop of its own (callers may be inside a loop)."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, coroutine).result()


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def temporary_database() -> Iterator[str]:
    """Create an empty database on the server, yield its URL, drop it (skip if no server)."""
    pytest.importorskip("asyncpg", reason="the postgres backend needs asyncpg")
    name = f"broker_test_{secrets.token_hex(6)}"
    parts = urlsplit(ADMIN_URL)
    try:
        _run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any failure to reach or use the server means: skip
        where = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], "", "", ""))
        pytest.skip(f"no PostgreSQL answers on {where}: {type(exc).__name__}: {exc}")
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def reset_database(url: str) -> None:
    """Drop everything in the database's ``public`` schema: each test starts empty."""
    import asyncpg

    conn = await asyncpg.connect(url, timeout=3)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()

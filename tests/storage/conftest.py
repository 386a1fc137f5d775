"""Fixtures of the storage tests: a PostgreSQL database of this test run's own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.storage.pg_database import temporary_database

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of an empty database created for this run (dropped after it), or a skip."""
    with temporary_database() as url:
        yield url

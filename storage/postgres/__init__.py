"""The PostgreSQL backend: several broker nodes serve the same queues from one database.

asyncpg is an optional dependency: importing this package doesn't import it.
`PostgresStorage` and the other names below load their module (and
asyncpg) when first used, as ``storage.storage_from_settings`` does
only for a ``postgresql://`` URL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .accounts import PostgresAccountStore
    from .connection import display_url
    from .migrations import SCHEMA_VERSION, check_postgres
    from .store import PostgresStorage

__all__ = [
    "SCHEMA_VERSION",
    "PostgresAccountStore",
    "PostgresStorage",
    "check_postgres",
    "display_url",
]

_LAZY = {
    "SCHEMA_VERSION": ".migrations",
    "PostgresAccountStore": ".accounts",
    "PostgresStorage": ".store",
    "check_postgres": ".migrations",
    "display_url": ".connection",
}


def __getattr__(name: str) -> Any:
    """Load the names that need asyncpg on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)

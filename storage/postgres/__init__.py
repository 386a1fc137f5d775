"""The PostgreSQL backend: several broker nodes serve the same queues from one database.

asyncpg is an optional dependency: importing this package doesn't import it.
`PostgresStorage` and the other names below load ``storage.postgres.store``
(and asyncpg) when first used, as ``storage.storage_from_settings`` does
only for a ``postgresql://`` URL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import SCHEMA_VERSION, PostgresStorage, check_postgres, display_url

__all__ = ["SCHEMA_VERSION", "PostgresStorage", "check_postgres", "display_url"]

_LAZY = {name: ".store" for name in __all__}


def __getattr__(name: str) -> Any:
    """Load the names that need asyncpg on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)

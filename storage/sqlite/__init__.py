"""The SQLite backend: one file, one writer thread, write-behind group commit.

`SQLiteStorage` is the broker's embedded default (`storage.sqlite.store`).
"""

from __future__ import annotations

from .accounts import SQLiteAccountStore
from .migrations import SCHEMA_VERSION, check_database
from .store import PAGE_SIZE, UNCLEAN_ID_GAP, SQLiteStorage

__all__ = [
    "PAGE_SIZE",
    "SCHEMA_VERSION",
    "UNCLEAN_ID_GAP",
    "SQLiteAccountStore",
    "SQLiteStorage",
    "check_database",
]

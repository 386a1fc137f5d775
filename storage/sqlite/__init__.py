"""The SQLite backend: one file, one writer thread, write-behind group commit.

`SQLiteStorage` is the broker's embedded default (`storage.sqlite.store`).
"""

from __future__ import annotations

from .store import PAGE_SIZE, SCHEMA_VERSION, UNCLEAN_ID_GAP, SQLiteStorage, check_database

__all__ = ["PAGE_SIZE", "SCHEMA_VERSION", "UNCLEAN_ID_GAP", "SQLiteStorage", "check_database"]

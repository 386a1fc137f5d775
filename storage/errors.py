"""Errors of the storage layer.

The tree::

    StorageError
    ├── StorageCorrupt     the database file can't be opened as a broker database
    └── StorageUnavailable (also a broker_core Unavailable) writes can't commit now
"""

from __future__ import annotations

from broker_core.errors import Unavailable

__all__ = ["StorageCorrupt", "StorageError", "StorageUnavailable"]


class StorageError(Exception):
    """Root of storage errors."""


class StorageCorrupt(StorageError):
    """The database at ``path`` is not a readable broker database."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"database {path} cannot be opened: {reason}")


class StorageUnavailable(StorageError, Unavailable):
    """A batch could not commit (disk full, read-only, I/O error); nothing in it is confirmed."""

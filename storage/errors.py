"""Errors of the storage layer.

The tree::

    StorageError
    ├── StorageCorrupt     the database file can't be opened as a broker database
    ├── StorageUnreachable the database server doesn't answer or refuses the connection
    └── StorageUnavailable (also a broker_core Unavailable) writes can't commit now
"""

from __future__ import annotations

from broker_core.errors import Unavailable

__all__ = [
    "StorageCorrupt",
    "StorageError",
    "StorageUnavailable",
    "StorageUnreachable",
]


class StorageError(Exception):
    """Root of storage errors."""


class StorageCorrupt(StorageError):
    """The database at ``path`` is not a readable broker database."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"database {path} cannot be opened: {reason}")


class StorageUnreachable(StorageError):
    """The database server at ``where`` can't be connected to (down, refused, bad credentials)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        super().__init__(f"database {where} cannot be reached: {reason}")


class StorageUnavailable(StorageError, Unavailable):
    """A batch could not commit (disk full, read-only, I/O error); nothing in it is confirmed."""

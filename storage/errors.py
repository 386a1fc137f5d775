"""Errors of the storage layer.

The tree::

    StorageError
    ├── StorageCorrupt     the database file can't be opened as a broker database
    │   └── StorageTooNew  its schema is from a newer release than this one
    ├── CommittedDataMissing the database ends before what the broker committed to it
    │   └── SegmentDataMissing a committed row references a body its segment lost
    ├── StorageUnreachable the database server doesn't answer or refuses the connection
    └── StorageUnavailable (also a broker_core Unavailable) writes can't commit now
"""

from __future__ import annotations

from broker_core.errors import Unavailable

__all__ = [
    "CommittedDataMissing",
    "SegmentDataMissing",
    "StorageCorrupt",
    "StorageError",
    "StorageTooNew",
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


class StorageTooNew(StorageCorrupt):
    """The database at ``path`` has schema ``version``, past the ``known`` this release migrates to.

    Opening it could misread or damage what the newer release wrote: the
    broker refuses before writing anything.
    """

    def __init__(self, path: str, version: int, known: int) -> None:
        self.path = path
        self.version = version
        self.known = known
        StorageError.__init__(
            self,
            f"the database at {path} was written by a newer release (schema {version}; "
            f"this release knows up to {known}): upgrade the broker or restore a backup",
        )


class CommittedDataMissing(StorageError):
    """The database at ``path`` ends at message id ``found`` but ``committed`` was committed.

    Its write-ahead log lost committed transactions (truncated, zeroed, or a
    power loss with ``synchronous=NORMAL``): confirmed messages are gone.
    """

    def __init__(self, path: str, found: int, committed: int) -> None:
        self.path = path
        self.found = found
        self.committed = committed
        super().__init__(
            f"the database at {path} lost committed writes: its last message id is {found} "
            f"but ids up to {committed} were committed ({committed - found} ids missing; "
            "a damaged or truncated WAL?): restore a backup, or start with --accept-data-loss "
            "(BROKER_ACCEPT_DATA_LOSS=1) to serve what is left"
        )


class SegmentDataMissing(CommittedDataMissing):
    """The database at ``path`` references a body that segment ``segment`` lost from ``offset`` on.

    A committed row's body is not whole in its segment file (truncated,
    zeroed, or a power loss with ``synchronous=NORMAL`` before the segment
    was fsynced): a confirmed message's body is gone.
    """

    def __init__(self, path: str, segment: int, offset: int) -> None:
        self.path = path
        self.segment = segment
        self.offset = offset
        self.found = self.committed = 0
        StorageError.__init__(
            self,
            f"the database at {path} references message bodies that segment {segment} lost "
            f"from offset {offset} on (a truncated or damaged segment file?): restore a "
            "backup, or start with --accept-data-loss (BROKER_ACCEPT_DATA_LOSS=1) to drop "
            "the messages whose bodies are gone and serve the rest",
        )


class StorageUnreachable(StorageError):
    """The database server at ``where`` can't be connected to (down, refused, bad credentials)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        super().__init__(f"database {where} cannot be reached: {reason}")


class StorageUnavailable(StorageError, Unavailable):
    """A batch could not commit (disk full, read-only, I/O error); nothing in it is confirmed."""

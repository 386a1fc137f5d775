"""A consistent copy of a live SQLite database, with SQLite's online backup API.

The copy reads through a read-only connection of its own: it takes no lock
the serving broker holds (not the data dir's ``broker.lock``, not SQLite's
write lock), and the broker keeps committing while it runs. The whole
database is copied in one step, inside one read transaction: in WAL mode
that transaction sees the database as of its first read, whatever commits
after, so the copy is one committed state (a copy in several steps would
start over each time another connection commits). Checkpoints meanwhile
copy no frame past that snapshot, so the log grows for the copy's length.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING

from ..errors import StorageCorrupt
from .watermark import highest_committed_id

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["backup_database"]


def backup_database(source: Path, target: Path) -> int:
    """Copy the database at ``source`` to the new file ``target`` (0600); return its highest id.

    The copy is checked (``PRAGMA quick_check``) and fsynced before this
    returns. A broker started on it recovers it as after an unclean stop
    (the copy was taken while the broker ran): pending messages read as
    redelivered, new ids continue past a gap.

    Raises:
        FileNotFoundError: there is no database at ``source``.
        FileExistsError: ``target`` exists.
        StorageCorrupt: the source can't be read, or the copy fails its check.
    """
    if not source.is_file():
        raise FileNotFoundError(f"no database at {source}")
    # Created empty and private first: SQLite keeps the mode of a file it opens.
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        with (
            closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as reader,
            closing(sqlite3.connect(target)) as copy,
        ):
            reader.execute("PRAGMA busy_timeout=5000")
            reader.backup(copy)
            check = copy.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StorageCorrupt(str(target), f"the copy's integrity check says {check}")
            highest = highest_committed_id(copy) if _has_schema(copy) else 0
    except sqlite3.DatabaseError as exc:
        raise StorageCorrupt(str(source), str(exc)) from exc
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return highest


def _has_schema(db: sqlite3.Connection) -> bool:
    return int(db.execute("PRAGMA user_version").fetchone()[0]) > 0

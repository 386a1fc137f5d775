"""A consistent copy of a live SQLite database, with SQLite's online backup API.

The copy reads through a read-only connection of its own: it takes no lock
the serving broker holds (not the data dir's ``broker.lock``, not SQLite's
write lock), and the broker keeps committing while it runs. The whole
database is copied in one step, inside one read transaction: in WAL mode
that transaction sees the database as of its first read, whatever commits
after, so the copy is one committed state (a copy in several steps would
start over each time another connection commits). Checkpoints meanwhile
copy no frame past that snapshot, so the log grows for the copy's length.

Bodies live in segment files beside the database (`storage.sqlite.segments`).
They are append-only, and a body is written before the commit that
references it, so every body the snapshot references is in its segment when
the snapshot starts. The segments are opened *before* the snapshot (an open
file outlives the broker deleting it as unreferenced), the ones created
meanwhile after it, and each is copied up to its size then: records past
what the copy references are a torn tail the broker started on the copy
cuts off.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING

from ..errors import StorageCorrupt
from .segments import segments_path
from .watermark import highest_committed_id

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["backup_database"]


def backup_database(source: Path, target: Path) -> int:
    """Copy the database at ``source`` to the new file ``target`` (0600); return its highest id.

    Its body segments are copied to `segments_path` of ``target``. The copy
    is checked (``PRAGMA quick_check``) and fsynced before this returns. A
    broker started on it recovers it as after an unclean stop (the copy was
    taken while the broker ran): pending messages read as redelivered, new
    ids continue past a gap.

    Raises:
        FileNotFoundError: there is no database at ``source``.
        FileExistsError: ``target`` exists.
        StorageCorrupt: the source can't be read, or the copy fails its check.
    """
    if not source.is_file():
        raise FileNotFoundError(f"no database at {source}")
    # Created empty and private first: SQLite keeps the mode of a file it opens.
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    segments: dict[str, int] = {}
    try:
        _open_segments(segments_path(source), segments)
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
        _open_segments(segments_path(source), segments)
        if segments:
            _copy_segments(segments, segments_path(target))
    except sqlite3.DatabaseError as exc:
        raise StorageCorrupt(str(source), str(exc)) from exc
    finally:
        for fd in segments.values():
            os.close(fd)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return highest


def _has_schema(db: sqlite3.Connection) -> bool:
    return int(db.execute("PRAGMA user_version").fetchone()[0]) > 0


def _open_segments(directory: Path, opened: dict[str, int]) -> None:
    """Open each segment file of ``directory`` not in ``opened`` yet (by name)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(".seg") and name not in opened:
            try:
                opened[name] = os.open(directory / name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # deleted since the listing: unreferenced, not needed


def _copy_segments(segments: dict[str, int], directory: Path) -> None:
    """Copy each open segment, up to its size now, into the new ``directory``; fsync all."""
    directory.mkdir(mode=0o700)
    for name, source in sorted(segments.items()):
        size = os.fstat(source).st_size
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            offset = 0
            while offset < size:
                chunk = os.pread(source, min(1 << 20, size - offset), offset)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                offset += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

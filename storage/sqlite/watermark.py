"""`CommitWatermark`: the highest message id committed, kept beside the database (lost WAL).

SQLite can't tell a torn or zeroed write-ahead log from one that never held
more: after a ``kill -9``, a WAL truncated or zeroed by an outside hand (a
careless copy, a restore without its ``-wal``, a faulty disk) starts as a
valid, older database, and confirmed messages, whole queues even, are gone
without a word. The broker knows better: after each batch that commits new
message ids, the writer thread ``pwrite``\\s the highest one into a small
file, ``<database>-committed`` (20 bytes: a magic, the id, a CRC). At start,
a database whose highest id (the highest row, or ``meta.last_id`` once rows
went) is below the file's lost committed writes, and the broker refuses to
start until told to accept the loss (`storage.errors.CommittedDataMissing`).

Why this is sound:

- The value is written only after the batch's ``COMMIT`` returned, so the
  WAL frames holding that id are in the file system before the watermark
  names it. A ``kill -9`` keeps the page cache: a restart after a crash with
  an intact WAL always finds the id (no false alarm), also when the message
  was since acked, pruned or purged (a batch or call that deletes rows keeps
  the highest id in ``meta``: the check is about ids committed, not rows
  present). Withdrawn publishes (a failed commit) never reach the file.
- It is raised only by a batch that committed a new id, i.e. a publish
  (or, when first created, to the database's highest id): an alarm
  therefore always means a committed publish is missing, never merely a
  lost ack or recovery record.
- ``synchronous=FULL`` fsyncs the WAL at each commit, before the value is
  written: whatever reaches the disk of this file, at any time, never runs
  ahead of what reached the disk of the log, so a power loss raises no
  alarm. ``NORMAL`` doesn't fsync the WAL at commit: after a power loss the
  kernel may have written this page and not the log's, and the broker
  refuses to start. That is the truth: confirmed messages *were* lost, the
  loss ``NORMAL`` trades for speed (the README's durability section).
- No fsync on the commit path: the page cache is enough against crashes,
  and the checkpointer thread fsyncs the file after a checkpoint, at most
  once a second, to keep what a power loss leaves current.
- A start accepting a loss continues ids past the watermark (and the
  unclean-stop gap after it): ids a client saw for a lost message never
  name a new one.

What it can't see: losses that hand out no id (an empty queue created, a
user, a token, settlements: those come back as redeliveries), and a
database that lost everything with its watermark. A missing or unreadable
file (a new data dir, one from 0.1.0, a restored backup) starts normally
and is created.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import time
import zlib
from typing import TYPE_CHECKING

from loguru import logger

from ..errors import CommittedDataMissing

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["CommitWatermark", "check_committed", "highest_committed_id", "watermark_path"]

_MAGIC = b"wsbcmt01"
_RECORD = struct.Struct("<8sQI")
"""Magic, highest committed id, CRC-32 of the two: one sector, written whole."""
_SYNC_INTERVAL_S = 1.0
"""The most often the checkpointer fsyncs the file (a page write each time)."""


def watermark_path(database: Path) -> Path:
    """The watermark file of the database at ``database``."""
    return database.with_name(database.name + "-committed")


def _pack(value: int) -> bytes:
    head = _MAGIC + value.to_bytes(8, "little")
    return _RECORD.pack(_MAGIC, value, zlib.crc32(head))


def read_watermark(path: Path) -> int | None:
    """The committed id recorded at ``path``; ``None`` when absent or unreadable (warned)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) >= _RECORD.size:
        magic, value, crc = _RECORD.unpack_from(data)
        if magic == _MAGIC and crc == zlib.crc32(magic + value.to_bytes(8, "little")):
            return int(value)
    logger.warning("commit watermark unreadable: ignored and rewritten", path=str(path))
    return None


def highest_committed_id(db: sqlite3.Connection) -> int:
    """The highest message id the database has committed (its highest row, or ``meta``)."""
    recorded = db.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchone()
    (highest_row,) = db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
    return max(int(recorded[0]) if recorded else 0, int(highest_row))


def check_committed(database: Path, *, accept_loss: bool = False) -> None:
    """Fail fast, before serving, when the database lost writes its watermark says committed.

    Read-only: nothing is written (the open, `CommitWatermark.open`, resets
    the watermark once a loss is accepted).

    Raises:
        CommittedDataMissing: unless ``accept_loss``.
    """
    committed = read_watermark(watermark_path(database))
    if committed is None or accept_loss:
        return
    found = 0
    if database.exists():
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            if connection.execute("PRAGMA user_version").fetchone()[0] > 0:
                found = highest_committed_id(connection)
        finally:
            connection.close()
    if found < committed:
        raise CommittedDataMissing(str(database), found, committed)


class CommitWatermark:
    """The open watermark file of one database: written by the writer, synced by the checkpointer.

    Args:
        database: the database file; the watermark is `watermark_path` of it.
    """

    def __init__(self, database: Path) -> None:
        self.path = watermark_path(database)
        self._fd: int | None = None
        self._written = 0
        self._synced = 0
        self._synced_at = 0.0
        self._failing = False

    def read(self) -> int | None:
        """The recorded committed id (``None``: no usable file)."""
        return read_watermark(self.path)

    def open(self, value: int) -> None:
        """Open (creating it, 0600) and record ``value`` durably; call once the database is open."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._fd = fd
        self._written = -1
        self.record(value)
        self.sync(force=True)
        if created:
            # The name must survive a power loss too, or the next start sees no file.
            with contextlib.suppress(OSError):
                directory = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)

    def record(self, value: int) -> None:
        """Write ``value`` (no fsync); only after the commit that made it returned (writer thread).

        A failure is logged, once per spell, and never fails the commit:
        the batch is committed, and a stale watermark only sees less.
        """
        fd = self._fd
        if fd is None or value == self._written:
            return
        try:
            os.pwrite(fd, _pack(value), 0)
        except OSError as exc:
            if not self._failing:
                logger.warning("commit watermark not written", path=str(self.path), error=str(exc))
            self._failing = True
            return
        self._failing = False
        self._written = value

    def sync(self, *, force: bool = False) -> None:
        """Flush what `record` wrote to disk, at most once a second (after a checkpoint)."""
        fd = self._fd
        written = self._written
        if fd is None or written == self._synced:
            return
        now = time.monotonic()
        if not force and now - self._synced_at < _SYNC_INTERVAL_S:
            return
        try:
            os.fdatasync(fd)
        except OSError as exc:
            logger.warning("commit watermark not synced", path=str(self.path), error=str(exc))
            return
        self._synced = written
        self._synced_at = now

    def close(self) -> None:
        """Sync and close (after the writer and the checkpointer stopped)."""
        if self._fd is None:
            return
        self.sync(force=True)
        fd, self._fd = self._fd, None
        os.close(fd)

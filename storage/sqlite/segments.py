"""`SegmentLog`: message bodies appended once to segment files beside the SQLite database.

SQLite writes a body twice (its WAL frame, then the checkpoint's copy) and
whole pages each time; NATS's file store and RabbitMQ's message store append
a body once to a log and keep state elsewhere. Here the database keeps every
state row, small and dense, with a reference to the body instead of it
(``messages.body_ref``), and the body is appended once to a segment file in
``<database>-segments/`` and never rewritten.

File format (little endian)::

    segment  := file_header record*
    file_header := b"wsbseg01" number:u64                     (16 bytes)
    record   := length:u32 id:u64 crc:u32 body[length]         (16 + length bytes)

``crc`` is the CRC-32 of ``length``, ``id`` and ``body``: a torn or zeroed
record never reads as a valid one. A reference is ``number << 40 | offset``
(`pack_ref`); the record's length is the row's ``size``, so a read is one
``pread`` of header and body, checked against the id and the CRC.

Ordering with the database (`storage.sqlite.store`): the writer appends a
batch's bodies with one ``pwrite`` *before* the SQLite commit that
references them, and with ``synchronous=FULL`` fsyncs the segment before
that commit; with ``NORMAL`` the bytes are in the page cache (a ``kill -9``
keeps them) and the checkpointer fsyncs the segment before each checkpoint
makes commits durable in the database file. A crash can therefore leave
records past what the database references (their commit never happened),
never a committed reference without its record, unless the disk lost
writes: `SegmentLog.recover` truncates a torn tail past the last reference
and reports a reference past the end (`storage.errors.SegmentDataMissing`).

A segment rolls over at `ROLL_BYTES`. Segments are never rewritten: one
whose bodies are all gone (acked and pruned, purged, deleted) is deleted
whole (`SegmentLog.remove_unreferenced`).
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import struct
import threading
import zlib
from contextlib import suppress
from typing import TYPE_CHECKING

from loguru import logger

from ..errors import SegmentDataMissing, StorageCorrupt

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = [
    "FILE_HEADER",
    "HIGHEST_REF_SQL",
    "OFFSET_BITS",
    "RECORD",
    "ROLL_BYTES",
    "SegmentLog",
    "check_bodies",
    "pack_ref",
    "segments_path",
    "unpack_ref",
]

FILE_HEADER = struct.Struct("<8sQ")
"""Magic and the segment's number."""
RECORD = struct.Struct("<IQI")
"""A record's header: body length, message id, CRC-32 of the length, id and body."""
_MAGIC = b"wsbseg01"
OFFSET_BITS = 40
"""A reference holds the segment's number above this many bits of offset."""
ROLL_BYTES = 64 * 1024 * 1024
"""A segment takes appends until it is this large, then a new one starts."""
_NAME = re.compile(r"^(\d{10})\.seg$")


def segments_path(database: Path) -> Path:
    """The directory of the segments of the database at ``database``."""
    return database.with_name(database.name + "-segments")


def pack_ref(number: int, offset: int) -> int:
    """The reference stored in a row for the record at ``offset`` of segment ``number``."""
    return number << OFFSET_BITS | offset


def unpack_ref(ref: int) -> tuple[int, int]:
    """``(segment number, offset)`` of a reference."""
    return ref >> OFFSET_BITS, ref & ((1 << OFFSET_BITS) - 1)


def encode_record(id: int, body: bytes) -> bytes:
    """One record: header and body."""
    head = struct.pack("<IQ", len(body), id)
    return head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


def _file_name(number: int) -> str:
    return f"{number:010d}.seg"


class SegmentLog:
    """The segment files of one database: appended by its writer, read by anyone.

    Args:
        directory: where the segments are (`segments_path` of the database).
        fsync: fsync each batch's appends before returning from `write`
            (``synchronous=FULL``).
        roll_bytes: the size at which a new segment starts.
    """

    def __init__(self, directory: Path, *, fsync: bool, roll_bytes: int = ROLL_BYTES) -> None:
        self.directory = directory
        self.fsync = fsync
        self.roll_bytes = roll_bytes
        self._lock = threading.Lock()
        self._readers: dict[int, int] = {}
        self._number = 0
        self._fd: int | None = None
        self._end = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._unsynced = False

    # -- opening and recovery (writer thread) -----------------------------------

    def numbers(self) -> list[int]:
        """The numbers of the segment files present, ascending."""
        with suppress(FileNotFoundError):
            return sorted(
                int(match.group(1))
                for name in os.listdir(self.directory)
                if (match := _NAME.match(name))
            )
        return []

    def recover(self, highest_ref: int | None) -> int | None:
        """Open for appends: truncate a torn tail past ``highest_ref``; say where bodies are lost.

        ``highest_ref`` is the highest reference the database holds (``None``:
        none). Records past it are checked one by one; the first invalid one
        (torn by a crash) and everything after it are cut off, and ``None``
        is returned. When the record at ``highest_ref`` is not there whole
        (the database references a body the segments lost), nothing is cut,
        appends go to a new segment (the damage stays as found), and the
        reference from which records are lost is returned.
        """
        self.directory.mkdir(mode=0o700, exist_ok=True)
        numbers = self.numbers()
        if highest_ref is None:
            start_number, start_offset = (numbers[-1] if numbers else 0), 0
        else:
            start_number, start_offset = unpack_ref(highest_ref)
        missing: int | None = None
        cuts: list[tuple[Path, int]] = []
        for number in numbers:
            if number < start_number:
                continue
            path = self.directory / _file_name(number)
            with open(path, "rb") as file:
                header = file.read(FILE_HEADER.size)
                base = FILE_HEADER.size
                if number == start_number and highest_ref is not None:
                    base = start_offset
                file.seek(base)
                data = file.read()
            if number == start_number and highest_ref is not None:
                first = _record_end(data, 0)
                if first is None or not _header_ok(header, number):
                    missing = pack_ref(number, _whole_prefix(path, number))
                    break
                keep = base + _valid_prefix(data, first)
            elif _header_ok(header, number):
                keep = base + _valid_prefix(data, 0)
            else:
                keep = 0
            if keep < base + len(data):
                cuts.append((path, keep))
        if highest_ref is not None and start_number not in numbers:
            missing = pack_ref(start_number, 0)
        if missing is None:
            for path, keep in cuts:
                logger.warning("segment tail torn: truncated", segment=str(path), kept=keep)
                with open(path, "r+b") as file:
                    file.truncate(keep)
                    os.fsync(file.fileno())
            self._open_for_append(max(numbers[-1] if numbers else 1, start_number, 1))
        else:
            self._open_for_append(max([*numbers, start_number]) + 1)
        return missing

    def _open_for_append(self, number: int) -> None:
        path = self.directory / _file_name(number)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        end = os.fstat(fd).st_size
        if end < FILE_HEADER.size:
            os.pwrite(fd, FILE_HEADER.pack(_MAGIC, number), 0)
            os.fsync(fd)
            _fsync_directory(self.directory)
            end = FILE_HEADER.size
        with self._lock:
            self._number, self._fd, self._end = number, fd, end

    # -- appends (writer thread) -------------------------------------------------

    def append(self, id: int, body: bytes) -> int:
        """Stage the record of message ``id``; return its reference (valid once `write` returned).

        Call `write` before the commit that stores the reference, or
        `discard` when the batch is abandoned.
        """
        # A batch's records go to one segment: it may pass the size by a batch.
        if not self._pending and self._end >= self.roll_bytes:
            self._roll()
        record = encode_record(id, body)
        ref = pack_ref(self._number, self._end + self._pending_bytes)
        self._pending.append(record)
        self._pending_bytes += len(record)
        return ref

    def write(self) -> None:
        """Write the staged records with one ``pwrite`` (and fsync them when `fsync`).

        On an error nothing counts as written: the next batch writes over
        the same bytes (the SQLite commit never happened either).

        Raises:
            OSError: the write or the fsync failed (disk full, I/O error).
        """
        if not self._pending:
            return
        fd = self._fd
        assert fd is not None, "recover() first"
        data = memoryview(b"".join(self._pending))
        offset = self._end
        try:
            while data:
                written = os.pwrite(fd, data, offset)
                data = data[written:]
                offset += written
            if self.fsync:
                os.fdatasync(fd)
        except OSError as exc:
            self.discard()
            path = self.directory / _file_name(self._number)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(
                    exc.errno, f"the disk is full: no room for message bodies in {path}"
                ) from exc
            raise OSError(
                exc.errno, f"cannot write message bodies to {path}: {exc.strerror}"
            ) from exc
        except BaseException:
            self.discard()
            raise
        self._end = offset
        self._unsynced = not self.fsync
        self._pending.clear()
        self._pending_bytes = 0

    def discard(self) -> None:
        """Forget the staged records (their batch failed before `write`)."""
        self._pending.clear()
        self._pending_bytes = 0

    def _roll(self) -> None:
        """Close the current segment (fsynced whatever the mode) and start the next one."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.fsync(fd)
            os.close(fd)
        self._open_for_append(self._number + 1)

    def sync(self) -> None:
        """Fsync what was written since the last sync (the checkpointer, before a checkpoint)."""
        with self._lock:
            fd = self._fd
            if fd is None or not self._unsynced:
                return
            self._unsynced = False
            os.fdatasync(fd)

    # -- reads (any thread) --------------------------------------------------------

    def read(self, ref: int, id: int, size: int) -> bytes:
        """The body of message ``id`` (``size`` bytes) at ``ref``.

        Raises:
            StorageCorrupt: the record is not there whole (a damaged segment).
        """
        number, offset = unpack_ref(ref)
        fd = self._reader(number)
        data = os.pread(fd, RECORD.size + size, offset)
        if len(data) == RECORD.size + size:
            length, stored_id, crc = RECORD.unpack_from(data)
            body = data[RECORD.size :]
            if (
                length == size
                and stored_id == id
                and crc == zlib.crc32(body, zlib.crc32(data[:12]))
            ):
                return body
        raise StorageCorrupt(
            str(self.directory / _file_name(number)),
            f"the body of message {id} at offset {offset} is damaged or missing",
        )

    def read_many(self, refs: Sequence[tuple[int, int, int]]) -> list[bytes]:
        """`read` for each ``(ref, id, size)``."""
        return [self.read(ref, id, size) for ref, id, size in refs]

    def _reader(self, number: int) -> int:
        fd = self._readers.get(number)
        if fd is not None:
            return fd
        with self._lock:
            fd = self._readers.get(number)
            if fd is None:
                try:
                    fd = os.open(self.directory / _file_name(number), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    raise StorageCorrupt(
                        str(self.directory / _file_name(number)), "the segment file is missing"
                    ) from None
                self._readers[number] = fd
            return fd

    # -- removal (writer thread) ---------------------------------------------------

    def remove_unreferenced(self, live: Iterable[int], before: int) -> list[int]:
        """Delete the segments before ``before`` that no row references; return them.

        ``live`` are the segment numbers some row references, read from a
        snapshot of the database taken once segment ``before`` was current:
        an earlier segment takes no new reference, so one unreferenced then
        stays unreferenced.
        """
        keep = set(live)
        removed = []
        for number in self.numbers():
            if number >= min(before, self._number) or number in keep:
                continue
            with self._lock:
                fd = self._readers.pop(number, None)
            if fd is not None:
                os.close(fd)
            with suppress(FileNotFoundError):
                os.unlink(self.directory / _file_name(number))
            removed.append(number)
        if removed:
            _fsync_directory(self.directory)
            logger.info("segments removed", count=len(removed), first=removed[0], last=removed[-1])
        return removed

    @property
    def current(self) -> int:
        """The number of the segment taking appends."""
        return self._number

    def size_bytes(self) -> int:
        """Bytes of every segment file."""
        total = 0
        for number in self.numbers():
            with suppress(OSError):
                total += (self.directory / _file_name(number)).stat().st_size
        return total

    def close(self) -> None:
        """Fsync and close every file (after the writer stopped)."""
        with self._lock:
            fd, self._fd = self._fd, None
            readers, self._readers = self._readers, {}
            unsynced, self._unsynced = self._unsynced, False
        if fd is not None:
            if unsynced:
                with suppress(OSError):
                    os.fdatasync(fd)
            os.close(fd)
        for reader in readers.values():
            os.close(reader)


HIGHEST_REF_SQL = (
    "SELECT max(body_ref) FROM (SELECT body_ref FROM messages "
    "WHERE body_ref IS NOT NULL ORDER BY id DESC LIMIT 10000)"
)
"""The highest body reference, looked for among the newest rows.

Bodies are appended in commit order and ids are handed out just before
their publish joins a batch, so the newest reference belongs to one of the
newest ids (a window far wider than a batch is read).
"""


def check_bodies(database: Path, *, accept_loss: bool = False) -> None:
    """Fail fast, before serving, when the newest body a row references is not whole (read-only).

    Raises:
        SegmentDataMissing: unless ``accept_loss``.
    """
    if accept_loss or not database.exists():
        return
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        if connection.execute("PRAGMA user_version").fetchone()[0] < 3:
            return
        (highest,) = connection.execute(HIGHEST_REF_SQL).fetchone()
    finally:
        connection.close()
    if highest is None:
        return
    number, offset = unpack_ref(highest)
    path = segments_path(database) / _file_name(number)
    try:
        with open(path, "rb") as file:
            header = file.read(FILE_HEADER.size)
            file.seek(offset)
            head = file.read(RECORD.size)
            length = RECORD.unpack(head)[0] if len(head) == RECORD.size else 0
            data = head + file.read(length)
    except FileNotFoundError:
        data = header = b""
    if not _header_ok(header, number) or _record_end(data, 0) is None:
        raise SegmentDataMissing(str(database), number, offset)


def _header_ok(data: bytes, number: int) -> bool:
    if len(data) < FILE_HEADER.size:
        return False
    magic, stored = FILE_HEADER.unpack_from(data)
    return bool(magic == _MAGIC and stored == number)


def _record_end(data: bytes, offset: int) -> int | None:
    """Where the valid record at ``offset`` ends, or ``None`` if there is none."""
    if offset + RECORD.size > len(data):
        return None
    length, _, crc = RECORD.unpack_from(data, offset)
    end: int = offset + RECORD.size + length
    if end > len(data):
        return None
    body = data[offset + RECORD.size : end]
    if crc != zlib.crc32(body, zlib.crc32(data[offset : offset + 12])):
        return None
    return end


def _whole_prefix(path: Path, number: int) -> int:
    """Where the valid records of the segment at ``path`` end (0: not even its header)."""
    data = path.read_bytes()
    return _valid_prefix(data, FILE_HEADER.size) if _header_ok(data, number) else 0


def _valid_prefix(data: bytes, offset: int) -> int:
    """Where the run of valid records from ``offset`` ends."""
    while (end := _record_end(data, offset)) is not None:
        offset = end
    return offset


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def scan(data: bytes) -> list[tuple[int, int, bytes]]:
    """Every valid record of a segment's bytes: ``(offset, id, body)`` (tests, tools)."""
    out = []
    offset = FILE_HEADER.size
    while (end := _record_end(data, offset)) is not None:
        _, id, _ = RECORD.unpack_from(data, offset)
        out.append((offset, id, data[offset + RECORD.size : end]))
        offset = end
    return out

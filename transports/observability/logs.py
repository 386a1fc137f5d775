"""``GET /logs`` and ``GET /logs/{filename}``: the JSON log files, listed and read back (admins).

The files are the hourly JSON-lines files that `transports.logging` writes to
``Settings.logs_dir`` (`LOG_FILE_GLOB`). Reading one returns its parsed
records, each with its ``line_number`` (from 1), filtered by:

``start`` / ``end``
    the first and last line number to look at (inclusive);
``level``
    a minimum level name (``TRACE`` < ``DEBUG`` < ``INFO`` < ``SUCCESS`` <
    ``WARNING`` < ``ERROR`` < ``CRITICAL``, any case);
``search``
    a case-insensitive substring of the message, exception, logger name or
    the JSON of the bound ``extra`` fields (a ``request_id``, a queue name);
``tail``
    keep only the last N matching records of the range;
``limit``
    the most records returned (at most `MAX_RECORDS`). Without ``tail``,
    when more records match, the page says ``truncated`` and gives
    ``next_start`` to continue from.

No name may reach outside the logs folder: a name must be a plain file name
(no separators, no leading dot: 400) that matches the log file pattern and
is a regular file in the folder, opened without following symlinks (404
otherwise). Percent-encoded slashes decode before routing and so never
reach this handler as one segment (404).

The work per request is bounded: a file is read line by line in a worker
thread (`asyncio.to_thread`), lines longer than `MAX_LINE_BYTES` are
skipped, and a page holds at most `MAX_RECORDS` records and about
`MAX_PAGE_BYTES` of log text.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import stat
from collections import deque
from datetime import datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import msgspec
from litestar import Controller, Request, get
from litestar.exceptions import ValidationException
from litestar.params import PathParameter, QueryParameter

from broker_core.messages import from_timestamp
from broker_core.permissions import require_admin

from ..context import ctx_of
from ..errors import ApiError
from ..logging import LOG_FILE_GLOB, parse_log_line
from ..security import user_of

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "LEVELS",
    "MAX_LINE_BYTES",
    "MAX_PAGE_BYTES",
    "MAX_RECORDS",
    "LogController",
    "LogFile",
    "LogPage",
    "LogQuery",
    "list_log_files",
    "read_log_file",
]

MAX_RECORDS = 1000
"""The most records one page returns."""
MAX_LINE_BYTES = 256 * 1024
"""Longer lines are skipped, never loaded whole."""
MAX_PAGE_BYTES = 4 * 1024 * 1024
"""A page stops growing (``truncated``) once its records' lines pass this size."""

LEVELS = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "SUCCESS": 25,
    "WARNING": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}
"""Loguru's level names and severities (``level`` filters by these)."""

# A plain file name: no separator, no leading dot (so neither "." nor "..").
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")
# Custom or stdlib levels without a loguru name are written as "Level 15".
_NUMERIC_LEVEL = re.compile(r"Level (\d+)")
# JSON escapes these inside strings; a needle without them appears verbatim in
# the raw line of any record whose text contains it.
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f\x7f]')
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_SYMLINK_ERRNOS = {errno.ELOOP, errno.EMLINK}  # Linux says ELOOP, the BSDs EMLINK

_extra_encoder = msgspec.json.Encoder(enc_hook=str)


class LogFile(msgspec.Struct, frozen=True, kw_only=True):
    """One log file of ``GET /logs``."""

    name: str
    size_bytes: int
    modified_at: datetime


class LogPage(msgspec.Struct, frozen=True, kw_only=True):
    """Records of one log file (``GET /logs/{filename}``), each with its ``line_number``."""

    file: str
    records: list[dict[str, Any]]
    truncated: bool
    """Some matching records were left out: after the last one (``limit`` or page size
    reached), or, with ``tail``, before the first (page size reached)."""
    next_start: int | None
    """Where the next page starts when records after the last one were left out."""


class LogQuery(NamedTuple):
    """What to read from a log file (see the module docstring)."""

    start: int = 1
    end: int | None = None
    tail: int | None = None
    search: str | None = None
    min_level: int | None = None
    limit: int = MAX_RECORDS


def _level_of(record: dict[str, Any]) -> int:
    level = record.get("level")
    if not isinstance(level, str):
        return 0
    number = LEVELS.get(level)
    if number is not None:
        return number
    match = _NUMERIC_LEVEL.fullmatch(level)
    return int(match.group(1)) if match else 0


def _matches(record: dict[str, Any], needle: str) -> bool:
    for key in ("message", "exception", "logger"):
        value = record.get(key)
        if isinstance(value, str) and needle in value.lower():
            return True
    extra = record.get("extra")
    return bool(extra) and needle in _extra_encoder.encode(extra).decode().lower()


def check_file_name(name: str) -> None:
    """Refuse anything but a plain log file name.

    Raises:
        ApiError: 400 for a name with path syntax, 404 for one that is no log file's.
    """
    if not _FILE_NAME.fullmatch(name):
        raise ApiError(400, "bad_request", "a log file name is a plain file name")
    if not fnmatchcase(name, LOG_FILE_GLOB):
        raise ApiError(404, "not_found", f"no log file {name!r}")


def list_log_files(logs_dir: Path) -> list[LogFile]:
    """The regular files matching `LOG_FILE_GLOB` in ``logs_dir``, newest name first.

    Symlinks and anything else that is not a regular file are left out.
    Blocking: call it in a thread.
    """
    files = []
    try:
        entries = list(os.scandir(logs_dir))
    except FileNotFoundError:  # logging to files not configured (yet)
        return []
    for entry in entries:
        if not fnmatchcase(entry.name, LOG_FILE_GLOB):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
        if stat.S_ISREG(info.st_mode):
            files.append(
                LogFile(
                    name=entry.name,
                    size_bytes=info.st_size,
                    modified_at=from_timestamp(info.st_mtime),
                )
            )
    files.sort(key=lambda file: file.name, reverse=True)
    return files


def _open_regular(path: Path) -> int:
    """Open ``path`` for reading if it is a regular file and not a symlink; return the fd."""
    try:
        # O_NOFOLLOW: a symlink is refused even if it is swapped in after a check.
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno in _SYMLINK_ERRNOS:
            raise FileNotFoundError(str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(str(path))
    return fd


def read_log_file(logs_dir: Path, name: str, query: LogQuery) -> LogPage:
    """Read the records of log file ``name`` selected by ``query``.

    Blocking: call it in a thread. ``name`` must have passed `check_file_name`.

    Raises:
        FileNotFoundError: no regular file of that name (or a symlink).
    """
    fd = _open_regular(logs_dir / name)
    needle = query.search.lower() if query.search else None
    # Skip the JSON decoding of lines that cannot match (see _JSON_ESCAPED).
    raw_needle = (
        needle.encode()
        if needle is not None and needle.isascii() and not _JSON_ESCAPED.search(needle)
        else None
    )
    min_level = query.min_level
    start, end = query.start, query.end
    limit = query.limit
    kept: deque[tuple[dict[str, Any], int]] = deque(maxlen=query.tail)
    kept_bytes = 0
    truncated = False
    next_start = None
    with os.fdopen(fd, "rb") as file:
        number = 0
        while True:
            line = file.readline(MAX_LINE_BYTES)
            if not line:
                break
            number += 1
            if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := file.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                continue
            if number < start:
                continue
            if end is not None and number > end:
                break
            if raw_needle is not None and raw_needle not in line.lower():
                continue
            record = parse_log_line(line)
            if record is None:
                continue
            if min_level is not None and _level_of(record) < min_level:
                continue
            if needle is not None and not _matches(record, needle):
                continue
            if query.tail is None and (len(kept) == limit or kept_bytes >= MAX_PAGE_BYTES):
                truncated = True
                next_start = number
                break
            record["line_number"] = number
            kept.append((record, len(line)))
            kept_bytes += len(line)
    if query.tail is not None:
        # The tail keeps the newest records that fit the page.
        kept_bytes = sum(size for _, size in kept)
        while kept_bytes > MAX_PAGE_BYTES and len(kept) > 1:
            kept_bytes -= kept.popleft()[1]
            truncated = True
    return LogPage(
        file=name,
        records=[record for record, _ in kept],
        truncated=truncated,
        next_start=next_start,
    )


FileName = Annotated[
    str, PathParameter(description="A log file name from GET /logs.", max_length=255)
]


class LogController(Controller):
    """``/logs``: the broker's JSON log files (admins only: they show every queue)."""

    path = "/logs"
    tags = ["operations"]
    opt = {"rate_limit": "admin"}

    @get("/")
    async def list_logs(self, request: Request[Any, Any, Any]) -> list[LogFile]:
        """The log files (name, size, last modification), newest first."""
        require_admin(user_of(request), "read the logs")
        return await asyncio.to_thread(list_log_files, ctx_of(request).settings.logs_dir)

    @get("/{filename:str}")
    async def read_log(
        self,
        request: Request[Any, Any, Any],
        filename: FileName,
        start: Annotated[
            int, QueryParameter(ge=1, description="First line number to read (from 1).")
        ] = 1,
        end: Annotated[
            int | None, QueryParameter(ge=1, description="Last line number to read.")
        ] = None,
        tail: Annotated[
            int | None,
            QueryParameter(ge=1, le=MAX_RECORDS, description="Only the last N matching records."),
        ] = None,
        search: Annotated[
            str | None,
            QueryParameter(min_length=1, max_length=200, description="Case-insensitive text."),
        ] = None,
        level: Annotated[
            str | None, QueryParameter(description="Minimum level: TRACE ... CRITICAL.")
        ] = None,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_RECORDS, description="Most records returned.")
        ] = MAX_RECORDS,
    ) -> LogPage:
        """Parsed records of one log file, filtered by line range, level and text."""
        require_admin(user_of(request), "read the logs")
        check_file_name(filename)
        if end is not None and end < start:
            raise ValidationException("end must not be before start")
        min_level = None
        if level is not None:
            min_level = LEVELS.get(level.upper())
            if min_level is None:
                raise ValidationException(f"level must be one of {', '.join(LEVELS)}")
        query = LogQuery(
            start=start,
            end=end,
            tail=None if tail is None else min(tail, limit),
            search=search,
            min_level=min_level,
            limit=limit,
        )
        logs_dir = ctx_of(request).settings.logs_dir
        try:
            return await asyncio.to_thread(read_log_file, logs_dir, filename, query)
        except FileNotFoundError:
            raise ApiError(404, "not_found", f"no log file {filename!r}") from None

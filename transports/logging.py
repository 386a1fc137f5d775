"""Logging configuration: loguru sinks for the console and hourly JSON-lines files.

:func:`configure_logging` is called once at startup. It sends every record,
loguru's and the standard library's (uvicorn, Litestar, websockets), to

* a colored console sink on stderr, and
* one JSON object per line in ``logs_dir/broker_YYYY-MM-DD_HH.jsonl`` (UTC
  hour), a new file every hour, files older than the retention deleted.

A JSON line holds ``time`` (ISO 8601 UTC), ``level``, ``message``, ``logger``,
``module``, ``function``, ``line``, ``extra`` (what was ``bind()``-ed, such as
``request_id`` or ``queue``; the id of the HTTP request being served,
from `REQUEST_ID`, joins every record logged while it runs) and ``exception``: the full traceback in
development mode, only ``Type: message`` otherwise (the console follows the
same rule). Bearer tokens, JWTs and passwords are masked in every message
(:func:`redact`) before any sink sees it, so an access-log line with a token
in its query string is written without it.

Elsewhere in the code base, log with ``from loguru import logger`` and
``logger.bind(queue=...)``; never configure sinks outside this module.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import re
import sys
import traceback
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TextIO, cast

import msgspec
from loguru import logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from loguru import Message, Record

    from broker_core.settings import Settings

__all__ = [
    "LOG_FILE_GLOB",
    "REQUEST_ID",
    "InterceptHandler",
    "ServedRequest",
    "configure_logging",
    "current_request_id",
    "parse_log_line",
    "redact",
]

LOG_FILE_GLOB = "broker_*.jsonl"
"""Matches the JSON log files in ``Settings.logs_dir`` (the ``/logs`` API lists these)."""


class ServedRequest:
    """The request a task serves, for its log records: id, task, and whether it still runs.

    Args:
        request_id: The request's id (``X-Request-ID``).
    """

    __slots__ = ("id", "live", "task")

    def __init__(self, request_id: str) -> None:
        self.id = request_id
        self.task = _current_task()
        self.live = True


REQUEST_ID: ContextVar[ServedRequest | None] = ContextVar("request_id", default=None)
"""The request being served (set by the request middleware); read it with `current_request_id`.

A plain context variable rather than ``logger.contextualize``, which copies
loguru's context under a lock on every request: the id is read only when a
record is actually logged.
"""


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a worker thread
        return None


def current_request_id() -> str | None:
    """The id of the request the calling code serves, or None.

    A task inherits a copy of its creator's context variables, so the
    variable alone would lend a request's id to every task started while it
    ran: a queue's task, started by the request that created the queue,
    logged that request's id for ever after, on a WebSocket's errors too.
    The id therefore counts only while the request runs, and only in its own
    task (or in a thread, which has none: ``asyncio.to_thread`` work it
    awaits). Long-lived work a request starts binds its own id (a WebSocket
    session binds its upgrade request's).
    """
    served = REQUEST_ID.get()
    if served is None or not served.live:
        return None
    task = _current_task()
    if task is not None and task is not served.task:
        return None
    return served.id


_FILE_PREFIX = "broker_"
_HOUR_FORMAT = "%Y-%m-%d_%H"
_FILE_NAME = _FILE_PREFIX + "{time:YYYY-MM-DD_HH!UTC}.jsonl"

# Stdlib loggers that libraries give their own handlers or levels to; they are
# reset to propagate into the root logger's InterceptHandler. The server must
# also not install its own config (uvicorn ``log_config=None``, Litestar
# ``logging_config=None``), or it would add handlers back after us.
_LIBRARY_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "litestar",
    "websockets",
    "websockets.server",
    "websockets.client",
    "strawberry",
    "granian",
)

# Top-level keys the formatters add to a record for their own template; loguru
# copies the record before formatting, so a value must sit on the record itself.
_JSON_KEY = "_wsbroker_json"
_EXC_KEY = "_wsbroker_exc"
_JSON_TEMPLATE = "{" + _JSON_KEY + "}\n"
_EXC_TEMPLATE = " <red>{" + _EXC_KEY + "}</red>"

_CONSOLE_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<cyan>{name}</cyan>:<cyan>{function}</cyan>:<cyan>{line}</cyan> - <level>{message}</level>"
)

# -- redaction ----------------------------------------------------------------

_SECRET_KEY = r"[\w-]*(?:password|passwd|secret|token|api_key|apikey)[\w-]*"
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values.
    (re.compile(r"(?i)\b(bearer)\s+[\w\-.~+/]+=*"), r"\1 ***"),
    (re.compile(r"(?i)(authorization\s*[:=]\s*basic)\s+[\w\-.~+/]+=*"), r"\1 ***"),
    # "password": "..." in JSON, 'password': '...' in a Python repr.
    (
        re.compile(rf"""(?i)(["']{_SECRET_KEY}["']\s*:\s*)(["'])(?:\\.|(?!\2)[^\\])*\2"""),
        r"\1\2***\2",
    ),
    # password=... in query strings and key=value text.
    (re.compile(rf"""(?i)\b({_SECRET_KEY}=)[^\s&;,"']+"""), r"\1***"),
    # Anything shaped like a JWT: a JSON header ("eyJ" is base64url of '{"'),
    # a payload and a signature.
    (re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]+"), "***"),
    # A service token (broker_core.service_tokens), wherever it appears: its id stays.
    (re.compile(r"\b(wsb_[0-9a-f]+_)[\w-]+"), r"\1***"),
)


def redact(text: str) -> str:
    """Mask bearer tokens, JWTs and password or token values in ``text``.

    Keys stay readable (``password=***``, ``"refresh_token": "***"``,
    ``Bearer ***``), so a log line still says what was sent.
    """
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _patch_record(record: Record) -> None:
    record["message"] = redact(record["message"])
    request_id = current_request_id()
    if request_id is not None:
        record["extra"].setdefault("request_id", request_id)


# -- formatting ---------------------------------------------------------------


def _fallback(obj: Any) -> str:
    """Encode a value msgspec does not know (a bound object) as its ``str``."""
    return str(obj)


_encoder = msgspec.json.Encoder(enc_hook=_fallback)
_decoder = msgspec.json.Decoder()


def _exception_text(record: Record, dev: bool) -> str | None:
    exception = record["exception"]
    if exception is None:
        return None
    type_, value, tb = exception
    if dev:
        text = "".join(traceback.format_exception(type_, value, tb))
    else:
        name = type_.__name__ if type_ is not None else "Exception"
        text = f"{name}: {value}" if str(value) else name
    return redact(text.rstrip("\n"))


def _to_json(record: Record, dev: bool) -> str:
    payload = {
        "time": record["time"].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        "module": record["module"],
        "function": record["function"],
        "line": record["line"],
        "extra": record["extra"],
        "exception": _exception_text(record, dev),
    }
    try:
        return _encoder.encode(payload).decode()
    except Exception:
        # A self-referencing or otherwise unencodable extra: stringify the
        # extras rather than lose the record (a log call must never fail).
        payload["extra"] = {str(key): str(value) for key, value in record["extra"].items()}
        return _encoder.encode(payload).decode()


def _json_formatter(dev: bool) -> Callable[[Record], str]:
    def format_record(record: Record) -> str:
        cast("dict[str, Any]", record)[_JSON_KEY] = _to_json(record, dev)
        return _JSON_TEMPLATE

    return format_record


def _console_formatter(dev: bool) -> Callable[[Record], str]:
    def format_record(record: Record) -> str:
        template = _CONSOLE_FORMAT
        if record["extra"]:
            template += " <dim>{extra}</dim>"
        if record["exception"] is not None:
            if dev:
                # Loguru fills {exception} with the traceback (backtrace, diagnose).
                return template + "\n{exception}"
            cast("dict[str, Any]", record)[_EXC_KEY] = _exception_text(record, dev)
            template += _EXC_TEMPLATE
        return template + "\n"

    return format_record


class _HourlyRotation:
    """Start a new file when a record belongs to a later UTC hour than the open file.

    Loguru's own ``"1 hour"`` counts from the file's creation and its
    ``"hourly"`` follows local time; the files are named by UTC hour, so the
    boundary is taken from the open file's name.
    """

    def __init__(self) -> None:
        self._file_name = ""
        self._limit = 0.0

    def __call__(self, message: Message, file: TextIO) -> bool:
        if file.name != self._file_name:
            self._file_name = file.name
            self._limit = _hour_end(os.path.basename(file.name))
        return message.record["time"].timestamp() >= self._limit


def _hour_end(file_name: str) -> float:
    """The end of the UTC hour a log file is named after (the next hour if unparsable)."""
    stamp = file_name.removeprefix(_FILE_PREFIX)[: len("YYYY-MM-DD_HH")]
    try:
        start = dt.datetime.strptime(stamp, _HOUR_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        start = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return (start + dt.timedelta(hours=1)).timestamp()


# -- standard library interception ----------------------------------------------


def _stdlib_origin(source: logging.LogRecord, record: Record) -> None:
    """Report the stdlib record's logger and call site instead of this module's."""
    # uvicorn logs its lifecycle on a logger named "uvicorn.error": an INFO
    # line labelled "error" misleads whoever greps the logs.
    record["name"] = "uvicorn" if source.name == "uvicorn.error" else source.name
    record["module"] = source.module
    record["function"] = source.funcName
    record["line"] = source.lineno


class InterceptHandler(logging.Handler):
    """A stdlib handler that forwards every record to loguru (installed on the root logger)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Re-log ``record`` through loguru with its level, exception and origin."""
        try:
            level: str | int
            try:
                level = logger.level(record.levelname).name
            except ValueError:
                level = record.levelno
            exc_info = record.exc_info
            exception = exc_info if exc_info and exc_info[0] is not None else None
            logger.patch(functools.partial(_stdlib_origin, record)).opt(exception=exception).log(
                level, record.getMessage()
            )
        except Exception:
            self.handleError(record)


def _intercept_stdlib(level: int) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, InterceptHandler)]:
        root.removeHandler(handler)
    root.addHandler(InterceptHandler())
    # The root level decides which stdlib records are even created; below the
    # configured level they would be built and then dropped by loguru.
    root.setLevel(level)
    for name in _LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
        library_logger.setLevel(logging.NOTSET)


# -- entry points ------------------------------------------------------------------


def configure_logging(settings: Settings) -> None:
    """Install the console and JSON file sinks and route stdlib logging into them.

    Idempotent: a second call replaces the sinks instead of adding more. It
    removes every loguru sink, including loguru's default one.

    Args:
        settings: Uses ``log_level``, ``dev``, ``logs_dir`` and ``log_retention_hours``.
    """
    logger.remove()
    logger.configure(patcher=_patch_record)
    level = settings.log_level
    logger.add(
        sys.stderr,
        level=level,
        format=_console_formatter(settings.dev),
        colorize=None,
        backtrace=settings.dev,
        # diagnose prints local variables, which may hold secrets: development only.
        diagnose=settings.dev,
        enqueue=False,
    )
    logger.add(
        str(settings.logs_dir / _FILE_NAME),
        level=level,
        format=_json_formatter(settings.dev),
        rotation=_HourlyRotation(),
        retention=dt.timedelta(hours=settings.log_retention_hours),
        encoding="utf-8",
        colorize=False,
        backtrace=False,
        diagnose=False,
        # One write per record from the event loop; no writer thread (the
        # broker is one asyncio process, and records are few above DEBUG).
        enqueue=False,
    )
    _intercept_stdlib(logger.level(level).no)


def parse_log_line(line: bytes) -> dict[str, Any] | None:
    """Decode one line of a JSON log file, or return None if it is not a JSON object.

    Tolerates what a crash or an external edit can leave: blank or truncated
    lines, invalid UTF-8, non-object values.
    """
    line = line.strip()
    if not line:
        return None
    try:
        value = _decoder.decode(line)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None

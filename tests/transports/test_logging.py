"""The logging setup: JSON-lines files, stdlib interception, redaction, and request ids.

A record carries its own request's id, never another's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from loguru import logger

from broker_core.settings import Settings
from tests.conftest import MS, make_settings
from tests.transports.ws.test_endpoint import make_queue, open_ws, recv, subscribe
from transports.logging import (
    LOG_FILE_GLOB,
    InterceptHandler,
    _HourlyRotation,
    configure_logging,
    parse_log_line,
    redact,
)
from transports.observability.middleware import RequestMetricsMiddleware
from transports.observability.telemetry import RequestCounters
from transports.ws.session import Session

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import httpx
    from loguru import Record

    from tests.conftest import BrokerServer

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJhbGljZSIsInR5cGUiOiJhY2Nlc3MifQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar", "websockets")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo configure_logging's global changes after each test."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {
        name: (list(lg.handlers), lg.propagate, lg.level)
        for name in LIBRARY_LOGGERS
        for lg in [logging.getLogger(name)]
    }
    yield
    logger.remove()
    logger.configure(patcher=lambda record: None)
    logger.add(sys.stderr)  # loguru's default sink
    root.handlers[:] = saved_root[0]
    root.setLevel(saved_root[1])
    for name, (handlers, propagate, level) in saved.items():
        library_logger = logging.getLogger(name)
        library_logger.handlers[:] = handlers
        library_logger.propagate = propagate
        library_logger.setLevel(level)


class _Opaque:
    def __str__(self) -> str:
        return "opaque"


def _configure(tmp_path: Path, **changes: Any) -> Settings:
    settings = Settings(data_dir=tmp_path, **changes)
    configure_logging(settings)
    return settings


def _records(settings: Settings) -> list[dict[str, Any]]:
    records = []
    for path in sorted(settings.logs_dir.glob(LOG_FILE_GLOB)):
        for line in path.read_bytes().splitlines():
            record = parse_log_line(line)
            assert record is not None, f"unparsable log line {line!r}"
            records.append(record)
    return records


def test_record_lands_in_json_file_with_documented_keys(tmp_path: Path) -> None:
    """A loguru record becomes one JSON line with the documented keys."""
    settings = _configure(tmp_path)
    logger.info("queue created")
    (record,) = _records(settings)
    assert set(record) == {
        "time",
        "level",
        "message",
        "logger",
        "module",
        "function",
        "line",
        "extra",
        "exception",
    }
    assert (record["level"], record["message"]) == ("INFO", "queue created")
    assert record["function"] == "test_record_lands_in_json_file_with_documented_keys"
    assert record["module"] == "test_logging"
    assert record["exception"] is None
    assert record["time"].endswith("Z")


def test_time_is_utc_iso8601(tmp_path: Path) -> None:
    """time parses as an ISO 8601 UTC instant close to now."""
    settings = _configure(tmp_path)
    logger.info("tick")
    (record,) = _records(settings)
    logged = dt.datetime.fromisoformat(record["time"])
    assert logged.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - logged) < dt.timedelta(minutes=1)


def test_file_is_named_by_utc_hour(tmp_path: Path) -> None:
    """The log file is broker_YYYY-MM-DD_HH.jsonl for the current UTC hour."""
    before = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d_%H")
    settings = _configure(tmp_path)
    logger.info("tick")
    after = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d_%H")
    (path,) = settings.logs_dir.iterdir()
    # An hour may turn during the test; either name is then right.
    assert path.name in {f"broker_{before}.jsonl", f"broker_{after}.jsonl"}


def test_bound_extras_are_kept(tmp_path: Path) -> None:
    """Values bound with logger.bind appear under extra."""
    settings = _configure(tmp_path)
    logger.bind(request_id="r-1", queue="orders").info("published")
    (record,) = _records(settings)
    assert record["extra"] == {"request_id": "r-1", "queue": "orders"}


def test_unencodable_extra_is_stringified(tmp_path: Path) -> None:
    """An extra msgspec cannot encode is written as its str."""
    settings = _configure(tmp_path)
    logger.bind(obj=_Opaque()).info("odd")
    (record,) = _records(settings)
    assert record["extra"] == {"obj": "opaque"}


def test_extra_with_non_string_keys_is_encoded(tmp_path: Path) -> None:
    """Dict keys JSON can't hold are written as their str."""
    settings = _configure(tmp_path)
    logger.bind(pairs={(1, 2): "x"}).info("odd keys")
    (record,) = _records(settings)
    assert record["extra"] == {"pairs": {"(1, 2)": "x"}}


def test_self_referencing_extra_is_stringified(tmp_path: Path) -> None:
    """An extra that cannot be encoded at all still leaves a record."""
    settings = _configure(tmp_path)
    loop: list[Any] = []
    loop.append(loop)
    logger.bind(loop=loop).info("cycle")
    (record,) = _records(settings)
    assert record["extra"] == {"loop": "[[...]]"}


def test_records_below_level_are_dropped(tmp_path: Path) -> None:
    """At INFO, DEBUG records are not written."""
    settings = _configure(tmp_path, log_level="INFO")
    logger.debug("per-message detail")
    logger.info("kept")
    assert [record["message"] for record in _records(settings)] == ["kept"]


def test_exception_is_summarised_outside_dev(tmp_path: Path) -> None:
    """Without dev, an exception is logged as its type and message only."""
    settings = _configure(tmp_path, dev=False)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logger.exception("boom")
    (record,) = _records(settings)
    assert record["exception"] == "ZeroDivisionError: division by zero"


def test_exception_has_traceback_in_dev(tmp_path: Path) -> None:
    """In dev mode, an exception is logged with its full traceback."""
    settings = _configure(tmp_path, dev=True)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logger.exception("boom")
    (record,) = _records(settings)
    assert record["exception"].startswith("Traceback (most recent call last)")
    assert "ZeroDivisionError: division by zero" in record["exception"]


def test_stdlib_logging_is_intercepted(tmp_path: Path) -> None:
    """A stdlib record lands in the JSON file under its logger name and call site.

    uvicorn's "uvicorn.error" logger (its lifecycle, not only errors) is shown as "uvicorn".
    """
    settings = _configure(tmp_path)
    logging.getLogger("uvicorn.error").warning("server %s", "started")
    (record,) = _records(settings)
    assert (record["logger"], record["level"]) == ("uvicorn", "WARNING")
    assert record["message"] == "server started"
    assert record["function"] == "test_stdlib_logging_is_intercepted"


def test_stdlib_exception_is_kept(tmp_path: Path) -> None:
    """A stdlib logger.exception carries its exception into the record."""
    settings = _configure(tmp_path)
    try:
        raise KeyError("k")
    except KeyError:
        logging.getLogger("litestar").exception("handler failed")
    (record,) = _records(settings)
    assert record["exception"] == "KeyError: 'k'"


def test_access_log_is_redacted(tmp_path: Path) -> None:
    """A token in an access-log line's query string is masked."""
    settings = _configure(tmp_path)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/ws?token={JWT}", "1.1", 101
    )
    (record,) = _records(settings)
    assert JWT not in record["message"]
    assert "token=***" in record["message"]


def test_loguru_messages_are_redacted(tmp_path: Path) -> None:
    """Our own records are masked too, arguments included."""
    settings = _configure(tmp_path)
    logger.info("login body {}", '{"username": "a", "password": "hunter2"}')
    (record,) = _records(settings)
    assert "hunter2" not in record["message"]


def test_configure_is_idempotent(tmp_path: Path) -> None:
    """Configuring twice leaves one file sink and one stdlib handler."""
    settings = _configure(tmp_path)
    configure_logging(settings)
    logger.info("once")
    logging.getLogger("uvicorn").info("once too")
    assert [record["message"] for record in _records(settings)] == ["once", "once too"]
    interceptors = [h for h in logging.getLogger().handlers if isinstance(h, InterceptHandler)]
    assert len(interceptors) == 1


def test_library_loggers_propagate_to_root(tmp_path: Path) -> None:
    """uvicorn and litestar loggers lose their own handlers and propagate."""
    logging.getLogger("uvicorn.access").addHandler(logging.NullHandler())
    logging.getLogger("uvicorn.access").propagate = False
    _configure(tmp_path)
    access = logging.getLogger("uvicorn.access")
    assert access.handlers == []
    assert access.propagate


def test_console_shows_message_and_extras(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console sink prints level, message and bound extras to stderr."""
    _configure(tmp_path)
    logger.bind(queue="orders").warning("queue full")
    err = capsys.readouterr().err
    assert "WARNING" in err
    assert "queue full" in err
    assert "orders" in err


def test_console_summarises_exception_outside_dev(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without dev, the console shows the exception's type and message, no traceback."""
    _configure(tmp_path)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logger.exception("boom")
    err = capsys.readouterr().err
    assert "ZeroDivisionError: division by zero" in err
    assert "Traceback" not in err


def _rotation_check(rotation: _HourlyRotation, file_name: str, at: dt.datetime) -> bool:
    message = SimpleNamespace(record={"time": at})
    file = SimpleNamespace(name=f"/logs/{file_name}")
    return rotation(message, file)  # type: ignore[arg-type]


def test_rotation_waits_for_the_next_utc_hour() -> None:
    """A record in the file's own UTC hour does not rotate; one in the next does."""
    rotation = _HourlyRotation()
    name = "broker_2024-05-01_10.jsonl"
    inside = dt.datetime(2024, 5, 1, 10, 59, 59, tzinfo=dt.UTC)
    assert not _rotation_check(rotation, name, inside)
    assert _rotation_check(rotation, name, dt.datetime(2024, 5, 1, 11, 0, tzinfo=dt.UTC))


def test_rotation_follows_utc_not_local_time() -> None:
    """Hour boundaries are UTC even for records in a half-hour time zone."""
    rotation = _HourlyRotation()
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    name = "broker_2024-05-01_10.jsonl"
    assert not _rotation_check(rotation, name, dt.datetime(2024, 5, 1, 16, 29, tzinfo=india))
    assert _rotation_check(rotation, name, dt.datetime(2024, 5, 1, 16, 30, tzinfo=india))


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("POST /login?username=a&password=hunter2 HTTP/1.1", "hunter2"),
        ('{"username": "a", "password": "hun\\"ter2"}', "hun"),
        ("{'new_password': 'hunter2'}", "hunter2"),
        ('{"refresh_token": "opaque-value"}', "opaque-value"),
        (f"decoded {JWT} ok", JWT.split(".")[1]),
        ("pasted wsb_0a1b2c3d4e5f6071_Zm9vYmFyYmF6-secret here", "Zm9vYmFyYmF6-secret"),
    ],
)
def test_redact_masks_secrets(text: str, secret: str) -> None:
    """Bearer and Basic credentials, passwords, token fields and JWTs are masked."""
    assert secret not in redact(text)
    assert "***" in redact(text)


def test_redact_leaves_ordinary_text_alone() -> None:
    """Dotted names and plain words are not mistaken for secrets."""
    text = 'queue orders.eu.v2 created by uvicorn.protocols.http {"queue": "q"}'
    assert redact(text) == text


@pytest.mark.parametrize(
    "line", [b"", b"   \n", b"not json", b'{"time": "2024', b"[1, 2]", b"\xff\xfe{}"]
)
def test_parse_log_line_tolerates_bad_lines(line: bytes) -> None:
    """Blank, truncated, non-object and non-UTF-8 lines parse to None."""
    assert parse_log_line(line) is None


def test_parse_log_line_decodes_a_record() -> None:
    """A JSON object line decodes to a dict."""
    assert parse_log_line(b'{"level": "INFO", "message": "hi"}\n') == {
        "level": "INFO",
        "message": "hi",
    }


@pytest.fixture
def records(tmp_path: Path) -> list[Record]:
    """Records logged with the broker's logging configuration (undone by ``_restore_logging``)."""
    configure_logging(make_settings(tmp_path / "logging", log_level="DEBUG"))
    caught: list[Record] = []
    logger.add(lambda message: caught.append(message.record), level="DEBUG")
    return caught


async def test_ws_error_log_carries_its_own_request_id(
    server: BrokerServer,
    client: httpx.AsyncClient,
    admin_token: str,
    records: list[Record],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A /ws session failing in a queue's task logs the WebSocket's id, not the queue creator's."""
    await make_queue(client)  # the queue's task starts within this request
    created = await client.post("/queues", json={"name": "other"})
    ws = await open_ws(server, admin_token, headers={"X-Request-ID": "ws-own-id"})
    await subscribe(ws)

    def broken(*args: Any) -> None:
        raise RuntimeError("injected delivery fault")

    monkeypatch.setattr(Session, "deliver", broken)
    published = await client.post("/queues/jobs/messages", json={"content": "x"})
    assert published.status_code == 201, published.text
    with pytest.raises(Exception, match="internal error"):
        while True:
            await recv(ws)
    await ws.close()
    [failed] = [r for r in records if r["message"] == "websocket session failed"]
    assert failed["extra"]["request_id"] == "ws-own-id"
    assert created.headers["x-request-id"] != "ws-own-id"


async def test_task_started_by_a_request_does_not_log_its_id_after_it(
    records: list[Record],
) -> None:
    """A task a request spawned, logging once the request is over, carries no request id."""
    release = asyncio.Event()
    spawned: list[asyncio.Task[None]] = []

    async def background() -> None:
        await release.wait()
        logger.info("late record")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        spawned.append(asyncio.get_running_loop().create_task(background()))
        logger.info("own record")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        return None

    middleware = RequestMetricsMiddleware(app, RequestCounters())
    scope = {"type": "http", "method": "GET", "headers": [(b"x-request-id", b"req-1")]}
    await middleware(scope, None, send)
    release.set()
    await asyncio.wait_for(spawned[0], 5000 * MS)
    by_message = {
        r["message"]: r["extra"].get("request_id") for r in records if r["name"] == __name__
    }
    assert by_message == {"own record": "req-1", "late record": None}

"""``GET /logs`` and ``GET /logs/{filename}``: listing, filters, admin only, no path escapes."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
from loguru import logger

from tests.conftest import MS, login
from transports.logging import configure_logging
from transports.observability.logs import MAX_LINE_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import BrokerServer

LOG_NAME = "broker_2030-01-02_03.jsonl"
LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar", "websockets")
SECRET = "do-not-leak-this-secret"


def line(level: str, message: str, exception: str | None = None, **extra: Any) -> bytes:
    record = {
        "time": "2030-01-02T03:04:05.000000Z",
        "level": level,
        "message": message,
        "logger": "tests",
        "module": "test_logs",
        "function": "line",
        "line": 1,
        "extra": extra,
        "exception": exception,
    }
    return msgspec.json.encode(record) + b"\n"


# Line numbers 1-6; line 4 is what a crash can leave behind and is skipped.
LINES = [
    line("INFO", "broker started"),
    line("DEBUG", "delivered", queue="jobs"),
    line("WARNING", "slow consumer", queue="Orders"),
    b'{"time": "2030-01-02T03:04:0\n',
    line("ERROR", "flush failed", exception="OSError: disk full"),
    line("INFO", "queue created", queue="orders", request_id="abc"),
]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Log at INFO so that lifecycle records (queue created) reach the files."""
    return {"log_level": "INFO"}


@pytest.fixture
def logs_dir(server: BrokerServer) -> Path:
    """The server's logs folder, holding LOG_NAME with LINES."""
    directory = server.settings.logs_dir
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOG_NAME).write_bytes(b"".join(LINES))
    return directory


@pytest.fixture
def file_logging(server: BrokerServer) -> Iterator[None]:
    """Log to the server's JSON files (configure_logging), undone after the test."""
    loggers = [logging.getLogger(), *map(logging.getLogger, LIBRARY_LOGGERS)]
    saved = [(lg, list(lg.handlers), lg.propagate, lg.level) for lg in loggers]
    configure_logging(server.settings)
    yield
    logger.remove()
    logger.add(sys.stderr)  # loguru's default sink
    for lg, handlers, propagate, level in saved:
        lg.handlers[:] = handlers
        lg.propagate = propagate
        lg.setLevel(level)


async def read(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get(f"/logs/{LOG_NAME}", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def numbers(page: dict[str, Any]) -> list[int]:
    return [record["line_number"] for record in page["records"]]


async def raw_get(server: BrokerServer, token: str, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (httpx would normalize ``..`` away)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5000 * MS)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(response.split(b" ", 2)[1]), response


async def test_list_shows_log_files_with_size_and_time(
    client: httpx.AsyncClient, logs_dir: Path
) -> None:
    """GET /logs lists each log file's name, size and modification time."""
    (logs_dir / "broker_2030-01-01_00.jsonl").write_bytes(LINES[0])
    response = await client.get("/logs")
    assert response.status_code == 200, response.text
    files = response.json()
    assert [f["name"] for f in files] == [LOG_NAME, "broker_2030-01-01_00.jsonl"]
    assert files[0]["size_bytes"] == len(b"".join(LINES))
    assert files[0]["modified_at"].endswith("Z")


async def test_list_leaves_out_other_files_and_symlinks(
    client: httpx.AsyncClient, logs_dir: Path, tmp_path: Path
) -> None:
    """Files not named like logs, and symlinks named like them, are not listed."""
    (logs_dir / "notes.txt").write_text("hello")
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(line("INFO", SECRET))
    (logs_dir / "broker_2030-01-03_00.jsonl").symlink_to(outside)
    names = [f["name"] for f in (await client.get("/logs")).json()]
    assert names == [LOG_NAME]


async def test_read_returns_parsed_records_with_line_numbers(
    client: httpx.AsyncClient, logs_dir: Path
) -> None:
    """A file reads back as parsed records numbered by line; broken lines are skipped."""
    page = await read(client)
    assert numbers(page) == [1, 2, 3, 5, 6]
    assert page["records"][0]["message"] == "broker started"
    assert page["records"][1]["extra"] == {"queue": "jobs"}
    assert page["truncated"] is False


async def test_start_and_end_select_a_line_range(client: httpx.AsyncClient, logs_dir: Path) -> None:
    """start and end (inclusive, from 1) select the lines read."""
    assert numbers(await read(client, start=2, end=3)) == [2, 3]


async def test_tail_returns_the_last_records(client: httpx.AsyncClient, logs_dir: Path) -> None:
    """tail=N returns the last N records."""
    assert numbers(await read(client, tail=2)) == [5, 6]


async def test_search_matches_case_insensitively_in_message_and_extra(
    client: httpx.AsyncClient, logs_dir: Path
) -> None:
    """search matches a substring of the message or bound fields, in any case."""
    assert numbers(await read(client, search="ORDERS")) == [3, 6]
    assert numbers(await read(client, search="Slow Consumer")) == [3]


async def test_search_matches_the_exception(client: httpx.AsyncClient, logs_dir: Path) -> None:
    """search also looks at a record's exception text."""
    assert numbers(await read(client, search="disk full")) == [5]


async def test_level_is_a_minimum(client: httpx.AsyncClient, logs_dir: Path) -> None:
    """level=warning keeps WARNING and more severe records."""
    assert numbers(await read(client, level="warning")) == [3, 5]


async def test_filters_combine(client: httpx.AsyncClient, logs_dir: Path) -> None:
    """tail applies to the records left by the range, level and search."""
    assert numbers(await read(client, start=2, level="INFO", tail=1, search="o")) == [6]


async def test_limit_truncates_and_says_where_to_continue(
    client: httpx.AsyncClient, logs_dir: Path
) -> None:
    """With more matches than limit, the page is truncated and next_start continues it."""
    page = await read(client, limit=2)
    assert numbers(page) == [1, 2]
    assert (page["truncated"], page["next_start"]) == (True, 3)
    assert numbers(await read(client, start=page["next_start"], limit=2)) == [3, 5]


async def test_overlong_lines_are_skipped_but_counted(
    client: httpx.AsyncClient, logs_dir: Path
) -> None:
    """A line longer than MAX_LINE_BYTES is skipped without shifting later line numbers."""
    huge = line("INFO", "x" * (MAX_LINE_BYTES + 10))
    (logs_dir / LOG_NAME).write_bytes(LINES[0] + huge + LINES[2])
    assert numbers(await read(client)) == [1, 3]


async def test_list_is_empty_without_a_logs_folder(client: httpx.AsyncClient) -> None:
    """Before any log file was written, GET /logs lists nothing."""
    response = await client.get("/logs")
    assert (response.status_code, response.json()) == (200, [])


@pytest.mark.parametrize(
    "params",
    [{"level": "LOUD"}, {"start": 5, "end": 2}, {"tail": 0}, {"limit": 100_000}],
    ids=["unknown-level", "end-before-start", "zero-tail", "huge-limit"],
)
async def test_bad_parameters_are_refused(
    client: httpx.AsyncClient, logs_dir: Path, params: dict[str, Any]
) -> None:
    """Unknown levels, inverted ranges and out-of-bounds counts answer a 4xx."""
    response = await client.get(f"/logs/{LOG_NAME}", params=params)
    assert response.status_code in (400, 422), response.text


async def test_logs_need_an_admin(server: BrokerServer, client: httpx.AsyncClient) -> None:
    """A user who is not an admin gets 403 from /logs."""
    created = await client.post(
        "/users",
        json={
            "username": "carol",
            "password": "carol-password",
            "permissions": [{"pattern": "*", "actions": ["consume"]}],
        },
    )
    assert created.status_code == 201, created.text
    token = (await login(server.url, "carol", "carol-password"))["access_token"]
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as carol:
        assert (await carol.get("/logs")).status_code == 403
        assert (await carol.get(f"/logs/{LOG_NAME}")).status_code == 403


async def test_logs_need_a_token(server: BrokerServer) -> None:
    """/logs without a bearer token is 401."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        assert (await anonymous.get("/logs")).status_code == 401


@pytest.mark.parametrize(
    "target",
    [
        "/logs/..%2Fjwt.secret",
        "/logs/%2e%2e%2Fjwt.secret",
        "/logs/%2e%2e",
        "/logs/..",
        "/logs/../jwt.secret",
        "/logs/..%5Cjwt.secret",
        "/logs/%2Fetc%2Fpasswd",
        "/logs//etc/passwd",
        "/logs/%2e",
        "/logs/.hidden.jsonl",
        "/logs/notes.txt",
    ],
)
async def test_names_outside_the_logs_folder_are_refused(
    server: BrokerServer, admin_token: str, logs_dir: Path, target: str
) -> None:
    """Traversal, encoded separators, absolute paths and non-log names answer 400 or 404."""
    (logs_dir / "notes.txt").write_text(SECRET)
    (logs_dir / ".hidden.jsonl").write_bytes(line("INFO", SECRET))
    status, response = await raw_get(server, admin_token, target)
    assert status in (400, 404), response
    assert SECRET.encode() not in response
    assert b"BEGIN" not in response and b"root:" not in response


async def test_symlink_to_outside_is_refused(
    client: httpx.AsyncClient, logs_dir: Path, tmp_path: Path
) -> None:
    """A symlink in the logs folder pointing outside it is not followed: 404."""
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(line("INFO", SECRET))
    (logs_dir / "broker_2030-01-03_00.jsonl").symlink_to(outside)
    response = await client.get("/logs/broker_2030-01-03_00.jsonl")
    assert response.status_code == 404
    assert SECRET not in response.text


async def test_fifo_named_like_a_log_is_refused_without_blocking(
    client: httpx.AsyncClient, logs_dir: Path
) -> None:
    """A FIFO named like a log file answers 404 instead of waiting for a writer."""
    os.mkfifo(logs_dir / "broker_2030-01-04_00.jsonl")
    response = await client.get("/logs/broker_2030-01-04_00.jsonl", timeout=5000 * MS)
    assert response.status_code == 404


async def test_missing_log_file_is_404(client: httpx.AsyncClient, logs_dir: Path) -> None:
    """A well-formed log name with no file behind it is 404."""
    assert (await client.get("/logs/broker_1999-01-01_00.jsonl")).status_code == 404


async def test_records_logged_during_a_request_carry_its_id(
    client: httpx.AsyncClient, file_logging: None
) -> None:
    """A record logged while a request runs is written with the request's id, and read back."""
    created = await client.post("/queues", json={"name": "jobs"})
    assert created.status_code == 201, created.text
    files = (await client.get("/logs")).json()
    assert files, "configure_logging writes the current hour's file"
    page = (
        await client.get(f"/logs/{files[0]['name']}", params={"search": "queue created"})
    ).json()
    (record,) = page["records"]
    assert record["extra"]["queue"] == "jobs"
    assert record["extra"]["request_id"] == created.headers["x-request-id"]

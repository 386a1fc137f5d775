"""The ``broker`` client commands (login, queues, publish, consume) against a real server."""

from __future__ import annotations

import asyncio
import io
import json
import stat
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import ADMIN_PASSWORD
from transports.cli import main

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from tests.conftest import BrokerServer


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: BrokerServer) -> Path:
    """A private config dir and ``BROKER_URL`` pointing at ``server``."""
    directory = tmp_path / "config"
    monkeypatch.setenv("BROKER_CONFIG_DIR", str(directory))
    monkeypatch.setenv("BROKER_URL", server.url)
    monkeypatch.delenv("BROKER_PASSWORD", raising=False)
    monkeypatch.delenv("BROKER_USERNAME", raising=False)
    return directory


async def broker(*argv: str, stdin: str | None = None) -> int:
    """Run ``broker ARGV`` in a thread (it runs its own event loop); its exit status."""
    if stdin is None:
        return await asyncio.to_thread(main, list(argv))
    import sys

    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return await asyncio.to_thread(main, list(argv))
    finally:
        sys.stdin = saved


async def logged_in(config_dir: Path) -> None:
    assert await broker("login", "--password-stdin", stdin=ADMIN_PASSWORD + "\n") == 0


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_login_keeps_the_tokens_in_a_private_file(
    config_dir: Path, server: BrokerServer
) -> None:
    """``broker login`` stores the token pair for the URL in a file only its owner can read."""
    await logged_in(config_dir)
    path = config_dir / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = json.loads(path.read_text())[server.url]
    assert entry["access_token"] and entry["refresh_token"]
    assert entry["username"] == "admin"


async def test_commands_need_a_login(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without stored tokens, a command fails with a one-line hint."""
    assert await broker("queues") == 1
    assert "broker login" in capsys.readouterr().err


async def test_publish_then_consume_prints_json_lines(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """``publish`` prints the new message id; ``consume --count`` prints it and acks it."""
    await client.post("/queues", json={"name": "jobs"})
    await logged_in(config_dir)
    capsys.readouterr()
    assert await broker("publish", "jobs", '{"order": 7}', "--header", "k=v") == 0
    [published] = json_lines(capsys.readouterr().out)
    assert await broker("consume", "jobs", "--count", "1") == 0
    [consumed] = json_lines(capsys.readouterr().out)
    assert consumed["message_id"] == published["message_id"]
    assert (consumed["content"], consumed["headers"]) == ({"order": 7}, {"k": "v"})
    assert (await client.get("/queues/jobs")).json()["processed"] == 1


async def test_publish_dash_reads_lines_from_stdin(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """``publish QUEUE -`` publishes one message per line: JSON when it parses, else text."""
    await client.post("/queues", json={"name": "jobs"})
    await logged_in(config_dir)
    capsys.readouterr()
    assert await broker("publish", "jobs", "-", stdin='1\nhello world\n{"x": 2}\n') == 0
    assert len(json_lines(capsys.readouterr().out)) == 3
    stored = (await client.get("/queues/jobs/messages")).json()["messages"]
    assert [m["content"] for m in stored] == [1, "hello world", {"x": 2}]


async def test_queues_prints_a_table(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """``queues`` prints a header and one row per queue with its counts."""
    await client.post("/queues", json={"name": "jobs"})
    await client.post("/queues/jobs/messages", json={"content": 1})
    await logged_in(config_dir)
    capsys.readouterr()
    assert await broker("queues") == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "PENDING", "PROCESSING", "PROCESSED", "FAILED", "CONSUMERS"]
    assert row.split() == ["jobs", "1", "0", "0", "0", "0"]


async def test_consume_nack_leaves_the_messages_pending(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """``consume --nack`` prints messages and requeues them: a peek."""
    await client.post("/queues", json={"name": "jobs"})
    await client.post(
        "/queues/jobs/messages/batch", json={"messages": [{"content": n} for n in range(3)]}
    )
    await logged_in(config_dir)
    capsys.readouterr()
    assert await broker("consume", "jobs", "--nack", "--count", "3") == 0
    assert [m["content"] for m in json_lines(capsys.readouterr().out)] == [0, 1, 2]
    info = (await client.get("/queues/jobs")).json()
    assert (info["pending"], info["processed"]) == (3, 0)


async def test_consume_timeout_ends_an_idle_read(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """``consume --timeout`` stops when no message comes in time."""
    await client.post("/queues", json={"name": "jobs"})
    await logged_in(config_dir)
    capsys.readouterr()
    assert await broker("consume", "jobs", "--timeout", "0.2") == 0
    assert capsys.readouterr().out == ""

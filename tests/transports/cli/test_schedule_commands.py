"""``broker schedules ...`` against a real server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from tests.transports.cli.test_client_commands import (
    broker,
    config_dir as config_dir,  # fixture
    logged_in,
)

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    import pytest


async def test_create_list_pause_resume_delete(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each subcommand does what its name says; ``list`` prints a table or JSON lines."""
    await logged_in(config_dir)
    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    capsys.readouterr()
    status = await broker(
        "schedules", "create", "jobs", "nightly", '{"job": "report"}',
        "--cron", "0 3 * * 1-5", "--timezone", "Europe/Riga", "--header", "kind=report",
    )  # fmt: skip
    assert status == 0
    created = json.loads(capsys.readouterr().out)
    assert created["cron"] == "0 3 * * 1-5" and created["headers"] == {"kind": "report"}
    assert await broker("schedules", "create", "jobs", "tick", "1", "--every-ms", "60000") == 0
    capsys.readouterr()
    assert await broker("schedules", "pause", "jobs", "tick") == 0
    assert json.loads(capsys.readouterr().out)["paused"] is True
    assert await broker("schedules", "list", "jobs") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["NAME", "EXPRESSION", "TIMEZONE"]
    assert table[1].startswith("nightly  0 3 * * 1-5") and table[1].split()[-2] == "no"
    assert table[2].startswith("tick") and "every 60000 ms" in table[2] and " yes " in table[2]
    assert await broker("schedules", "resume", "jobs", "tick") == 0
    capsys.readouterr()
    assert await broker("schedules", "delete", "jobs", "tick") == 0
    assert await broker("schedules", "list", "jobs", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["name"] for s in listed] == ["nightly"]


async def test_errors_are_one_line_and_exit_1(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad cron expression or an unknown schedule: exit 1 with the broker's reason."""
    await logged_in(config_dir)
    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    capsys.readouterr()
    assert await broker("schedules", "create", "jobs", "x", "1", "--cron", "99 * * * *") == 1
    assert "cron" in capsys.readouterr().err
    assert await broker("schedules", "pause", "jobs", "nope") == 1
    assert "nope" in capsys.readouterr().err

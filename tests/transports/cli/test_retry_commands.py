"""``broker pause``, ``resume``, ``cancel`` and ``reschedule`` against a real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tests.transports.cli.test_client_commands import broker, config_dir, json_lines, logged_in

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    import pytest

__all__ = ["config_dir"]


async def test_pause_and_resume_print_the_queue(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """`broker pause --until` and `broker resume` change and print the queue's pause."""
    await logged_in(config_dir)
    await client.post("/queues", json={"name": "jobs"})
    until = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    assert await broker("pause", "jobs", "--until", until.isoformat()) == 0
    assert await broker("resume", "jobs") == 0
    paused, resumed = json_lines(capsys.readouterr().out)
    assert paused["paused"] is True
    assert datetime.fromisoformat(paused["paused_until"]) == until
    assert resumed["paused"] is False
    assert await broker("pause", "jobs", "--until", "tomorrow") == 1
    assert "ISO 8601" in capsys.readouterr().err


async def test_cancel_and_reschedule(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """`broker reschedule` delays a message, `broker cancel` removes it; a second cancel fails."""
    await logged_in(config_dir)
    await client.post("/queues", json={"name": "jobs"})
    published = await client.post("/queues/jobs/messages", json={"content": 1})
    id = str(published.json()["message_id"])
    assert await broker("reschedule", "jobs", id, "--delay-ms", "60000", "--priority", "4") == 0
    [view] = json_lines(capsys.readouterr().out)
    assert (view["waiting"], view["priority"]) == ("delayed", 4)
    assert await broker("cancel", "jobs", id) == 0
    assert await broker("cancel", "jobs", id) == 1
    assert "does not exist" in capsys.readouterr().err

"""``broker pause``, ``resume``, ``cancel`` and ``reschedule`` against a real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from tests.transports.cli.cli_helpers import Cli


async def test_pause_and_resume_print_the_queue(logged_in: Cli, client: httpx.AsyncClient) -> None:
    """`broker pause --until` and `broker resume` change and print the queue's pause."""
    await client.post("/queues", json={"name": "jobs"})
    until = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    paused = (await logged_in.ok("pause", "jobs", "--until", until.isoformat())).json()
    resumed = (await logged_in.ok("resume", "jobs")).json()
    assert paused["paused"] is True
    assert datetime.fromisoformat(paused["paused_until"]) == until
    assert resumed["paused"] is False
    refused = await logged_in("pause", "jobs", "--until", "tomorrow")
    assert refused.code == 1
    assert "ISO 8601" in refused.err


async def test_cancel_and_reschedule(logged_in: Cli, client: httpx.AsyncClient) -> None:
    """`broker reschedule` delays a message, `broker cancel` ends it; a second cancel fails."""
    await client.post("/queues", json={"name": "jobs"})
    published = await client.post("/queues/jobs/messages", json={"content": 1})
    id = str(published.json()["message_id"])
    run = await logged_in.ok("reschedule", "jobs", id, "--delay-ms", "60000", "--priority", "4")
    view = run.json()
    assert (view["waiting"], view["priority"]) == ("delayed", 4)
    await logged_in.ok("cancel", "jobs", id)
    again = await logged_in("cancel", "jobs", id)
    assert again.code == 1
    assert "it is ended" in again.err

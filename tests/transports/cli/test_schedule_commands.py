"""``broker schedules ...`` as a subprocess against a real server."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from tests.transports.cli.cli_helpers import Cli


async def test_create_list_pause_resume_delete(logged_in: Cli, client: httpx.AsyncClient) -> None:
    """Each subcommand does what its name says; ``list`` prints a table or JSON lines."""
    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    run = await logged_in.ok(
        "schedules", "create", "jobs", "nightly", '{"job": "report"}',
        "--cron", "0 3 * * 1-5", "--timezone", "Europe/Riga", "--header", "kind=report",
    )  # fmt: skip
    created = run.json()
    assert created["cron"] == "0 3 * * 1-5" and created["headers"] == {"kind": "report"}
    await logged_in.ok("schedules", "create", "jobs", "tick", "1", "--every-ms", "60000")
    assert (await logged_in.ok("schedules", "pause", "jobs", "tick")).json()["paused"] is True
    table = (await logged_in.ok("schedules", "list", "jobs")).out.splitlines()
    assert table[0].split()[:3] == ["NAME", "EXPRESSION", "TIMEZONE"]
    assert table[1].startswith("nightly  0 3 * * 1-5") and table[1].split()[-2] == "no"
    assert table[2].startswith("tick") and "every 60000 ms" in table[2] and " yes " in table[2]
    await logged_in.ok("schedules", "resume", "jobs", "tick")
    await logged_in.ok("schedules", "delete", "jobs", "tick")
    listed = (await logged_in.ok("schedules", "list", "jobs", "--json")).lines()
    assert [s["name"] for s in listed] == ["nightly"]


async def test_errors_are_one_line_and_exit_1(logged_in: Cli, client: httpx.AsyncClient) -> None:
    """A bad cron expression or an unknown schedule: exit 1 with the broker's reason."""
    assert (await client.post("/queues", json={"name": "jobs"})).status_code == 201
    bad = await logged_in("schedules", "create", "jobs", "x", "1", "--cron", "99 * * * *")
    assert bad.code == 1 and "cron" in bad.err
    unknown = await logged_in("schedules", "pause", "jobs", "nope")
    assert unknown.code == 1 and "nope" in unknown.err

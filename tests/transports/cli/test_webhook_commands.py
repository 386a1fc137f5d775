"""``broker webhooks list/create/pause/resume/delete`` as a subprocess against a real server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from tests.transports.cli.cli_helpers import Cli


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allowed_hosts": ("127.0.0.1",)}


async def test_webhook_commands(logged_in: Cli, client: httpx.AsyncClient) -> None:
    """Create (secret shown once), pause, list (no secret), resume, delete; refusals exit 1."""
    await client.post("/queues", json={"name": "jobs"})
    url = "http://127.0.0.1:9/hook"
    created = (
        await logged_in.ok(
            "webhooks", "create", "jobs", url, "--concurrency", "3", "--header", "x-a=1"
        )
    ).json()
    assert created["secret"].startswith("whsec_")
    assert (created["concurrency"], created["headers"]) == (3, {"x-a": "1"})
    id = created["id"]
    assert (await logged_in.ok("webhooks", "pause", "jobs", id)).json()["state"] == "paused"
    [listed] = (await logged_in.ok("webhooks", "list", "jobs")).lines()
    assert (listed["id"], listed["state"], listed["secret"]) == (id, "paused", None)
    assert (await logged_in.ok("webhooks", "resume", "jobs", id)).json()["state"] == "active"
    await logged_in.ok("webhooks", "delete", "jobs", id)
    again = await logged_in("webhooks", "delete", "jobs", id)
    assert again.code == 1 and "not found" in again.err
    refused = await logged_in("webhooks", "create", "jobs", "http://10.9.9.9/x")
    assert refused.code == 1 and "$.url" in refused.err

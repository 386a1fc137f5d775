"""``broker webhooks list/create/pause/resume/delete`` against a real server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.transports.cli.test_client_commands import broker, config_dir, json_lines, logged_in

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

__all__ = ["config_dir"]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allowed_hosts": ("127.0.0.1",)}


async def test_webhook_commands(
    config_dir: Path, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await logged_in(config_dir)
    await client.post("/queues", json={"name": "jobs"})
    url = "http://127.0.0.1:9/hook"
    assert (
        await broker("webhooks", "create", "jobs", url, "--concurrency", "3", "--header", "x-a=1")
        == 0
    )
    [created] = json_lines(capsys.readouterr().out)
    assert created["secret"].startswith("whsec_")
    assert (created["concurrency"], created["headers"]) == (3, {"x-a": "1"})
    id = created["id"]
    assert await broker("webhooks", "pause", "jobs", id) == 0
    assert await broker("webhooks", "list", "jobs") == 0
    paused, listed = json_lines(capsys.readouterr().out)
    assert paused["state"] == "paused"
    assert (listed["id"], listed["state"], listed["secret"]) == (id, "paused", None)
    assert await broker("webhooks", "resume", "jobs", id) == 0
    [resumed] = json_lines(capsys.readouterr().out)
    assert resumed["state"] == "active"
    assert await broker("webhooks", "delete", "jobs", id) == 0
    assert await broker("webhooks", "delete", "jobs", id) == 1
    assert "not found" in capsys.readouterr().err
    assert await broker("webhooks", "create", "jobs", "http://10.9.9.9/x") == 1
    assert "$.url" in capsys.readouterr().err

"""Message groups survive a restart: kill -9 with a group's head leased, order kept after."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx

from tests.conftest import login

if TYPE_CHECKING:
    from tests.conftest import ServerProcess


async def consume(http: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    response = await http.get("/queues/jobs/messages/consume", params={"max": count, "wait": 2})
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def test_order_per_group_survives_kill_and_restart(server_process_factory: Any) -> None:
    """A group's leased head comes back first (redelivered) after kill -9; options survive."""
    process: ServerProcess = server_process_factory()
    await process.start()
    token = (await login(process.url))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=process.url, headers=headers) as http:
        response = await http.post(
            "/queues", json={"name": "jobs", "group_concurrency": 2, "lease": 600}
        )
        assert response.status_code == 201, response.text
        messages = [{"content": f"{g}{n}", "group": g} for n in range(4) for g in "ab"]
        response = await http.post("/queues/jobs/messages/batch", json={"messages": messages})
        assert response.status_code == 201, response.text
        got = await consume(http, 10)
        assert sorted(m["content"] for m in got) == ["a0", "a1", "b0", "b1"]
        await asyncio.sleep(0.2)  # the deliveries' batch commits (write-behind)
    process.kill()
    await process.start()
    token = (await login(process.url))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=process.url, headers=headers) as http:
        info = (await http.get("/queues/jobs")).json()
        assert info["group_concurrency"] == 2
        order: dict[str, list[str]] = {"a": [], "b": []}
        for _ in range(20):
            batch = await consume(http, 10)
            if not batch:
                break
            for message in batch:
                assert message["group"] is not None
                order[message["group"]].append(message["content"])
                if message["content"][1] in "01":
                    assert message["redelivered"], message
                response = await http.post(f"/messages/{message['message_id']}/ack")
                assert response.status_code == 200
    assert order == {"a": ["a0", "a1", "a2", "a3"], "b": ["b0", "b1", "b2", "b3"]}

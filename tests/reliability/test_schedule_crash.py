"""A schedule across ``kill -9``: its instants are never published twice, the downtime is one.

The broker runs as a subprocess with a one-second schedule and is killed
with SIGKILL (no shutdown, no flush) while firing, then started again on the
same data dir after a few periods. Each instant's message and its record
commit together, so the restarted broker neither repeats an instant whose
message survived nor loses track of it, and the periods it was down are one
catch-up message.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from tests.conftest import MS, login

if TYPE_CHECKING:
    from tests.conftest import ServerProcess


async def _admin(process: ServerProcess) -> httpx.AsyncClient:
    token = (await login(process.url))["access_token"]
    return httpx.AsyncClient(
        base_url=process.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def _instants(http: httpx.AsyncClient) -> list[float]:
    response = await http.get("/queues/ticks/messages", params={"limit": 1000})
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return sorted(
        datetime.fromisoformat(m["headers"]["x-scheduled-for"]).timestamp() for m in messages
    )


async def test_kill_9_neither_repeats_an_instant_nor_bursts(server_process_factory: Any) -> None:
    """After SIGKILL and a restart: every instant once, and one message for the downtime."""
    process: ServerProcess = server_process_factory()
    await process.start()
    async with await _admin(process) as http:
        assert (await http.post("/queues", json={"name": "ticks"})).status_code == 201
        body = {"name": "tick", "every_ms": 1000, "content": 1}
        assert (await http.post("/queues/ticks/schedules", json=body)).status_code == 201
        for _ in range(40):
            if len(await _instants(http)) >= 3:
                break
            await asyncio.sleep(250 * MS)
        # Land the kill just after a fire, when its batch may still be committing.
        before = len(await _instants(http))
        for _ in range(40):
            if len(await _instants(http)) > before:
                break
            await asyncio.sleep(10 * MS)
    process.kill()
    await asyncio.sleep(3500 * MS)
    await process.start()
    async with await _admin(process) as http:
        await asyncio.sleep(2500 * MS)
        instants = await _instants(http)
    assert len(instants) == len(set(instants)), "an instant was published twice"
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(instants)]
    assert [gap for gap in gaps if gap != 1.0] == [max(gaps)], gaps
    assert max(gaps) >= 2.0, gaps

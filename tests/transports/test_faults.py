"""Disk faults: a full or broken database refuses publishes with 503 and recovers; never a lie."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import MS
from tests.transports.test_ws import open_ws, recv, send

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import BrokerServer


async def _page_count(server: BrokerServer) -> int:
    async with server.ctx.storage.reader.execute("PRAGMA page_count") as cursor:
        row = await cursor.fetchone()
    return int(row[0])


async def _set_max_pages(server: BrokerServer, pages: int) -> None:
    # A per-connection limit: it is the writer's connection that must hit it.
    await server.ctx.storage.writer.call(lambda db: db.execute(f"PRAGMA max_page_count = {pages}"))


async def _wait_healthy(server: BrokerServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for _ in range(200):
            if (await http.get("/health")).status_code == 200:
                return
            await asyncio.sleep(25 * MS)
    raise AssertionError("the broker did not recover")


async def test_full_disk_refuses_publishes_then_recovers(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """With the database full, publishes answer 503; when space is back, they succeed again."""
    await client.post("/queues", json={"name": "jobs"})
    kept = (await client.post("/queues/jobs/messages", json={"content": "before"})).json()
    await _set_max_pages(server, await _page_count(server))
    big = "x" * 200_000
    refused = await client.post("/queues/jobs/messages", json={"content": big})
    assert refused.status_code == 503
    assert "full" in refused.json()["detail"]
    health = await client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    # While degraded, publishes are refused up front and reads still work.
    again = await client.post("/queues/jobs/messages", json={"content": "small"})
    assert again.status_code == 503
    assert (await client.get("/queues/jobs")).status_code == 200
    await _set_max_pages(server, 1_000_000)
    await _wait_healthy(server)
    after = await client.post("/queues/jobs/messages", json={"content": "after"})
    assert after.status_code == 201
    leased = (await client.get("/queues/jobs/messages/consume", params={"max": 10})).json()
    contents = [m["content"] for m in leased["messages"]]
    assert contents[0] == "before"
    assert contents[-1] == "after"
    assert kept["message_id"] == leased["messages"][0]["message_id"]


async def test_batched_websocket_publishes_to_a_full_disk_each_fail_then_recover(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A WebSocket batch whose commit fails gets one error per frame, no confirm; then recovers."""
    await client.post("/queues", json={"name": "jobs"})
    await _set_max_pages(server, await _page_count(server))
    big = "x" * 100_000
    async with await open_ws(server, admin_token) as ws:
        await send(
            ws,
            op="batch",
            frames=[{"op": "publish", "queue": "jobs", "content": big, "ref": n} for n in range(3)],
        )
        answers = [await recv(ws) for _ in range(3)]
        assert [(a["op"], a["ref"], a["code"]) for a in answers] == [
            ("error", n, "unavailable") for n in range(3)
        ]
        await _set_max_pages(server, 1_000_000)
        await _wait_healthy(server)
        await send(
            ws,
            op="batch",
            frames=[{"op": "publish", "queue": "jobs", "content": n, "ref": n} for n in range(3)],
        )
        confirms = [await recv(ws) for _ in range(3)]
    assert [(c["op"], c["ref"]) for c in confirms] == [("confirm", n) for n in range(3)]


async def test_corrupt_database_at_start_is_a_clear_error(
    tmp_path: Path, server_process_factory: Any
) -> None:
    """A garbage database file stops the start with a one-line reason, not a traceback."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "broker.db").write_bytes(b"this is not a database" * 100)
    process = server_process_factory(data)
    with pytest.raises(RuntimeError) as failure:
        await process.start()
    message = str(failure.value)
    assert "exited with 1" in message
    assert "cannot be opened" in message
    assert "Traceback" not in message

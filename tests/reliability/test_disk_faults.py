"""Disk faults: a full or broken database refuses publishes with 503 and recovers; never a lie."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import MS
from tests.transports.ws.test_endpoint import open_ws, recv, send

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import BrokerServer


async def _page_count(server: BrokerServer) -> int:
    async with server.ctx.storage.reader.execute("PRAGMA page_count") as cursor:
        row = await cursor.fetchone()
    return int(row[0])


async def _set_max_pages(server: BrokerServer, pages: int) -> None:
    # Bodies kept in their rows, so that a big publish needs pages (a segment
    # on a really full disk: test_disk_full).
    server.ctx.storage.inline_max = 1 << 30
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
            ("error", n, "storage_unavailable") for n in range(3)
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


async def _stored_contents(client: httpx.AsyncClient, queue: str) -> list[Any]:
    """The contents of every message of ``queue`` that storage holds, by id."""
    page = (await client.get(f"/queues/{queue}/messages", params={"limit": 1000})).json()
    return [message["content"] for message in page["messages"]]


async def test_a_publish_refused_on_a_full_disk_is_never_stored(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A publish answered 503 on a full disk is absent once space is back, and after a restart."""
    await client.post("/queues", json={"name": "jobs"})
    assert (await client.post("/queues/jobs/messages", json={"content": "before"})).is_success
    await _set_max_pages(server, await _page_count(server))
    refused = await client.post("/queues/jobs/messages", json={"content": "x" * 200_000})
    assert refused.status_code == 503
    await _set_max_pages(server, 1_000_000)
    await _wait_healthy(server)
    assert (await client.post("/queues/jobs/messages", json={"content": "after"})).is_success
    assert await _stored_contents(client, "jobs") == ["before", "after"]
    leased = (await client.get("/queues/jobs/messages/consume", params={"max": 10})).json()
    assert [m["content"] for m in leased["messages"]] == ["before", "after"]
    await server.restart()
    async with httpx.AsyncClient(base_url=server.url, headers=client.headers) as again:
        assert await _stored_contents(again, "jobs") == ["before", "after"]


async def test_a_publish_refused_on_a_full_disk_is_not_delivered_later(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A consumer subscribed while a publish fails to commit never gets it after the failure."""
    await client.post("/queues", json={"name": "jobs"})
    await _set_max_pages(server, await _page_count(server))
    async with await open_ws(server, admin_token) as ws:
        big = "x" * 200_000
        await send(ws, op="publish", queue="jobs", content=big, ref=1)
        assert (await recv(ws))["op"] == "error"
        await _set_max_pages(server, 1_000_000)
        await _wait_healthy(server)
        await send(ws, op="subscribe", queue="jobs", prefetch=10, ref=2)
        assert (await recv(ws))["op"] == "subscribed"
        await send(ws, op="publish", queue="jobs", content="after", ref=3)
        frames = [await recv(ws) for _ in range(2)]
    delivered = [frame["content"] for frame in frames if frame["op"] == "deliver"]
    assert delivered == ["after"]


async def _collide_with_the_next_id(server: BrokerServer, queue: str, last_id: int) -> None:
    """Store a row under the id the broker hands out next, as a second broker on the file would."""
    await server.ctx.storage.writer.call(
        lambda db: db.execute(
            "INSERT INTO messages (id, queue, status, created_at, size, content) "
            "VALUES (?, ?, 2, 0, 5, x'7468656972')",
            (last_id + 1, queue),
        )
    )


async def test_a_commit_that_cannot_succeed_fails_its_publish_and_the_broker_goes_on(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A publish breaking a constraint gets an error and is not retried; later ones commit."""
    await client.post("/queues", json={"name": "jobs"})
    first = (await client.post("/queues/jobs/messages", json={"content": "first"})).json()
    await _collide_with_the_next_id(server, "other", first["message_id"])
    failed = await client.post("/queues/jobs/messages", json={"content": "clash"})
    assert failed.status_code == 503
    assert "IntegrityError" in failed.json()["detail"]
    later = await client.post("/queues/jobs/messages", json={"content": "later"})
    assert later.status_code == 201, later.text
    assert (await client.get("/health")).status_code == 200
    assert await _stored_contents(client, "jobs") == ["first", "later"]
    leased = (await client.get("/queues/jobs/messages/consume", params={"max": 10})).json()
    assert [m["content"] for m in leased["messages"]] == ["first", "later"]

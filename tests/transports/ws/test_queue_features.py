"""Queue features over the WebSocket: priority, delay, TTL, dedup, limits, dead letters, touch."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tests.conftest import MS
from tests.transports.ws.test_endpoint import make_queue, open_ws, recv, send, subscribe

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import ClientConnection

    from tests.conftest import BrokerServer


async def publish_ws(ws: ClientConnection, ref: str, **frame: Any) -> dict[str, Any]:
    """Publish one message over the socket; the server's answer (confirm or error)."""
    frame.setdefault("queue", "jobs")
    await send(ws, op="publish", ref=ref, **frame)
    reply = await recv(ws)
    assert reply.get("ref") == ref, reply
    return reply


async def test_priorities_over_ws(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Published with priorities over the socket, messages are pushed highest first."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        for ref, priority in (("low", 0), ("high", 9), ("mid", 5)):
            assert (await publish_ws(ws, ref, content=ref, priority=priority))["op"] == "confirm"
        await subscribe(ws, prefetch=10)
        order = [(await recv(ws))["content"] for _ in range(3)]
    assert order == ["high", "mid", "low"]


async def test_delay_over_ws(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A delayed publish is pushed only once its delay passed."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        await publish_ws(ws, "later", content="later", delay_ms=300)
        await publish_ws(ws, "now", content="now")
        await subscribe(ws)
        first = await recv(ws)
        assert first["content"] == "now"
        second = await recv(ws)
    assert second["content"] == "later"


async def test_ttl_over_ws(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A message that expired before any consumer came is never pushed."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        await publish_ws(ws, "stale", content="stale", ttl_ms=50)
        await publish_ws(ws, "fresh", content="fresh")
        await asyncio.sleep(200 * MS)
        await subscribe(ws)
        assert (await recv(ws))["content"] == "fresh"
        info = (await client.get("/queues/jobs")).json()
    assert (info["pending"], info["processing"]) == (0, 1)


async def test_dedup_over_ws(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A repeated dedup_id is confirmed with the first message's id and stored once."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        first = await publish_ws(ws, "a", content=1, dedup_id="order-1")
        second = await publish_ws(ws, "b", content=2, dedup_id="order-1")
    assert second["message_id"] == first["message_id"]
    assert second["duplicate"] is True
    assert (await client.get("/queues/jobs")).json()["pending"] == 1


async def test_full_queue_over_ws(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A publish to a full queue gets a queue_full error, and the socket stays usable."""
    await make_queue(client, max_length=1)
    async with await open_ws(server, admin_token) as ws:
        assert (await publish_ws(ws, "a", content=1))["op"] == "confirm"
        refused = await publish_ws(ws, "b", content=2)
        assert (refused["op"], refused["code"]) == ("error", "queue_full")
        await subscribe(ws)
        assert (await recv(ws))["content"] == 1


async def test_dead_letter_over_ws(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A delivery nacked without requeue lands in the dead-letter queue with its history."""
    await make_queue(client, name="dead")
    await make_queue(client, dead_letter_queue="dead")
    async with await open_ws(server, admin_token) as ws:
        await publish_ws(ws, "a", content="job")
        await subscribe(ws)
        frame = await recv(ws)
        await send(ws, op="nack", tags=[frame["tag"]], requeue=False, reason="broken")
        await subscribe(ws, queue="dead")
        dead = await recv(ws)
    assert (dead["queue"], dead["message_id"], dead["content"]) == (
        "dead",
        frame["message_id"],
        "job",
    )


async def test_touch_over_ws(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A touch frame keeps a short lease from expiring."""
    await make_queue(client, lease=0.3)
    async with await open_ws(server, admin_token) as ws:
        await publish_ws(ws, "a", content="slow")
        await subscribe(ws)
        frame = await recv(ws)
        await send(ws, op="touch", tags=[frame["tag"]], lease=5)
        await asyncio.sleep(500 * MS)
        info = (await client.get("/queues/jobs")).json()
        assert (info["processing"], info["pending"]) == (1, 0)
        await send(ws, op="ack", tags=[frame["tag"]])
        await asyncio.sleep(50 * MS)
    assert (await client.get("/queues/jobs")).json()["processed"] == 1

"""Message groups over the WebSocket: grouped publish and batch frames, competing consumers,
nack keeping order, single active consumer failover."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from tests.transports.ws.test_endpoint import make_queue, open_ws, recv, send, subscribe

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import ClientConnection

    from tests.conftest import BrokerServer


async def next_frame(ws: ClientConnection, op: str) -> dict[str, Any]:
    """The next frame of ``op`` (others are skipped)."""
    while True:
        frame = await recv(ws)
        if frame["op"] == op:
            return frame


async def test_competing_ws_consumers_keep_order_per_group(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Publish frames (single and batch) with groups; three subscribers: in order per group,
    never two of a group in flight."""
    await make_queue(client)
    groups = [f"device-{n}" for n in range(3)]
    async with await open_ws(server, admin_token) as pub:
        for seq in range(2):
            for g in groups:
                await send(pub, op="publish", queue="jobs", content=seq, group=g, ref=f"{g}{seq}")
                assert (await next_frame(pub, "confirm"))["ref"] == f"{g}{seq}"
        frames = [
            {"op": "publish", "queue": "jobs", "content": seq, "group": g, "ref": f"{g}{seq}"}
            for seq in range(2, 6)
            for g in groups
        ]
        await send(pub, op="batch", frames=frames)
        for _ in frames:
            await next_frame(pub, "confirm")
    seen: dict[str, list[int]] = {g: [] for g in groups}
    in_flight: set[str] = set()

    async def consumer() -> None:
        async with await open_ws(server, admin_token) as ws:
            await subscribe(ws, prefetch=4)
            while sum(len(s) for s in seen.values()) < 18:
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                except TimeoutError:
                    continue
                if frame["op"] != "deliver":
                    continue
                group = frame["group"]
                assert group not in in_flight, f"two of {group} in flight"
                in_flight.add(group)
                await asyncio.sleep(0.01)
                seen[group].append(frame["content"])
                in_flight.discard(group)
                await send(ws, op="ack", tags=[frame["tag"]])

    await asyncio.wait_for(asyncio.gather(consumer(), consumer(), consumer()), 30)
    assert seen == {g: list(range(6)) for g in groups}


async def test_ws_nack_goes_again_before_the_rest_of_its_group(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A nacked message comes back before the later ones of its group; other groups flow."""
    await make_queue(client)
    response = await client.post(
        "/queues/jobs/messages/batch",
        json={
            "messages": [
                {"content": "a1", "group": "a"},
                {"content": "a2", "group": "a"},
                {"content": "b1", "group": "b"},
            ]
        },
    )
    assert response.status_code == 201
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws, prefetch=10)
        first = await next_frame(ws, "deliver")
        second = await next_frame(ws, "deliver")
        assert [first["content"], second["content"]] == ["a1", "b1"]
        await send(ws, op="nack", tags=[first["tag"]])
        again = await next_frame(ws, "deliver")
        assert (again["content"], again["redelivered"]) == ("a1", True)
        await send(ws, op="ack", tags=[again["tag"]])
        last = await next_frame(ws, "deliver")
        assert last["content"] == "a2"


async def test_single_active_consumer_failover(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Only the first subscriber receives; when it leaves, the next gets what it held, in order."""
    await make_queue(client, single_active_consumer=True)
    response = await client.post(
        "/queues/jobs/messages/batch", json={"messages": [{"content": n} for n in range(6)]}
    )
    assert response.status_code == 201
    active = await open_ws(server, admin_token)
    standby = await open_ws(server, admin_token)
    try:
        await subscribe(active, prefetch=3)
        await subscribe(standby, prefetch=3)
        got = [await next_frame(active, "deliver") for _ in range(3)]
        assert [f["content"] for f in got] == [0, 1, 2]
        await send(active, op="ack", tags=[got[0]["tag"]])
        assert (await next_frame(active, "deliver"))["content"] == 3
        with contextlib.suppress(TimeoutError):
            frame = await asyncio.wait_for(standby.recv(), 0.5)
            raise AssertionError(f"the standby got {frame!r}")
        await active.close()
        taken = [await next_frame(standby, "deliver") for _ in range(3)]
        assert [f["content"] for f in taken] == [1, 2, 3]
        assert all(f["redelivered"] for f in taken)
    finally:
        await active.close()
        await standby.close()

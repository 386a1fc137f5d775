"""``batch`` frames on ``/ws``: many frames in one WebSocket message, both ways, in order."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import msgspec

from tests.conftest import MS, make_user
from tests.transports.ws.test_endpoint import make_queue, open_ws, publish_rest, recv, send

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import ClientConnection

    from tests.conftest import BrokerServer


async def frames_until(
    ws: ClientConnection, count: int, op: str
) -> tuple[list[dict[str, Any]], int]:
    """Read messages until ``count`` frames of ``op`` came; the frames and how many batches."""
    seen: list[dict[str, Any]] = []
    batches = 0
    while sum(1 for f in seen if f["op"] == op) < count:
        message = await recv(ws)
        if message["op"] == "batch":
            batches += 1
            assert len(message) == 2, message  # {"op", "frames"} and nothing else
            seen.extend(message["frames"])
        else:
            seen.append(message)
    return seen, batches


async def test_a_client_batch_is_handled_frame_by_frame(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Publishes sent as one batch are each confirmed, in order, as if sent alone."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        frames = [
            {"op": "publish", "queue": "jobs", "content": {"n": n}, "ref": n} for n in range(20)
        ]
        await send(ws, op="batch", frames=frames)
        confirms, batches = await frames_until(ws, 20, "confirm")
        assert batches == 0, "a connection that did not ask gets single frames"
    assert [c["ref"] for c in confirms] == list(range(20))
    ids = [c["message_id"] for c in confirms]
    assert ids == sorted(ids)
    info = (await client.get("/queues/jobs")).json()
    assert info["pending"] == 20


async def test_a_connection_that_asks_gets_batches_in_order(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """With ``?batch=true``, confirms and deliveries come batched, each once and in order."""
    await make_queue(client)
    ids = await publish_rest(client, [{"n": n} for n in range(300)])
    async with await open_ws(server, admin_token, query="?batch=true") as ws:
        await send(ws, op="subscribe", queue="jobs", prefetch=300, ref="s")
        frames, delivered_in_batches = await frames_until(ws, 300, "deliver")
        assert delivered_in_batches >= 1
        subscribed, *deliveries = frames
        assert subscribed["op"] == "subscribed", "the subscription is known before its deliveries"
        assert [d["message_id"] for d in deliveries] == ids
        assert [d["content"] for d in deliveries] == [{"n": n} for n in range(300)]
        await send(ws, op="ack", tags=[d["tag"] for d in deliveries])
        # Pipelined publishes: their confirms leave together once their batch committed.
        for n in range(200):
            await send(ws, op="publish", queue="jobs", content=n, ref=f"p{n}")
        confirms, confirmed_in_batches = await frames_until(ws, 200, "confirm")
        assert confirmed_in_batches >= 1
        assert [c["ref"] for c in confirms if c["op"] == "confirm"] == [f"p{n}" for n in range(200)]


async def test_msgpack_batches_carry_msgpack_frames(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A MessagePack connection's batches are MessagePack maps, its frames decoded alike."""
    await make_queue(client)
    async with await open_ws(
        server, admin_token, query="?batch=true", subprotocols=["msgpack"]
    ) as ws:
        frames = [{"op": "publish", "queue": "jobs", "content": n, "ref": n} for n in range(50)]
        await ws.send(msgspec.msgpack.encode({"op": "batch", "frames": frames}))
        refs: list[int] = []
        while len(refs) < 50:
            data = await asyncio.wait_for(ws.recv(), 5000 * MS)
            assert isinstance(data, bytes), "msgpack frames are binary"
            message = msgspec.msgpack.decode(data)
            for frame in message["frames"] if message["op"] == "batch" else [message]:
                assert frame["op"] == "confirm", frame
                refs.append(frame["ref"])
    assert refs == list(range(50))


async def test_a_bad_frame_in_a_batch_refuses_the_batch_and_keeps_the_connection(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A batch is decoded whole: one invalid frame refuses it all; nothing of it is published."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        good = {"op": "publish", "queue": "jobs", "content": 1, "ref": 1}
        await ws.send(json.dumps({"op": "batch", "frames": [good, {"op": "nope"}]}))
        error = await recv(ws)
        assert (error["op"], error["code"]) == ("error", "invalid"), error
        await send(ws, op="batch", frames=[good])
        assert (await recv(ws))["op"] == "confirm"
    assert (await client.get("/queues/jobs")).json()["pending"] == 1


async def test_a_full_queue_refuses_only_the_batched_publishes_that_do_not_fit(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Publishes batched together are not atomic: those past max_length fail, the others land."""
    await make_queue(client, max_length=2)
    async with await open_ws(server, admin_token) as ws:
        frames = [
            {"op": "publish", "queue": "jobs", "content": {"n": n}, "ref": n} for n in range(4)
        ]
        await send(ws, op="batch", frames=frames)
        answers = [await recv(ws) for _ in range(4)]
    assert [(a["op"], a["ref"]) for a in answers] == [
        ("confirm", 0),
        ("confirm", 1),
        ("error", 2),
        ("error", 3),
    ]
    assert answers[2]["code"] == answers[3]["code"] == "queue_full", answers[2]
    assert (await client.get("/queues/jobs")).json()["pending"] == 2


async def test_batched_publishes_to_several_queues_keep_their_order_and_errors(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Runs of publishes per queue with refused frames and an ack among them: each answered."""
    await make_queue(client, "a")
    await make_queue(client, "b")
    too_big = "x" * (server.settings.max_message_bytes + 1)
    async with await open_ws(server, admin_token) as ws:
        frames = [
            {"op": "publish", "queue": "a", "content": 1, "ref": "a1"},
            {"op": "publish", "queue": "a", "content": 2, "ref": "a2"},
            {"op": "publish", "queue": "b", "content": 3, "ref": "b1"},
            {"op": "publish", "queue": "b", "content": too_big, "ref": "big"},
            {"op": "publish", "queue": "b", "content": 4, "ref": "b2"},
            {"op": "publish", "queue": "missing", "content": 5, "ref": "nowhere"},
            {"op": "ack", "tags": [999], "ref": "ack"},
            {"op": "publish", "queue": "a", "content": 6, "ref": "a3"},
        ]
        await send(ws, op="batch", frames=frames)
        answers: dict[str, dict[str, Any]] = {}
        while len(answers) < len(frames):
            answer = await recv(ws)
            answers[answer["ref"]] = answer
    assert {ref: a["op"] for ref, a in answers.items()} == {
        "a1": "confirm",
        "a2": "confirm",
        "b1": "confirm",
        "big": "error",
        "b2": "confirm",
        "nowhere": "error",
        "ack": "error",
        "a3": "confirm",
    }
    assert (answers["big"]["code"], answers["nowhere"]["code"]) == ("too_large", "queue_not_found")
    for queue, refs, contents in (
        ("a", ["a1", "a2", "a3"], [1, 2, 6]),
        ("b", ["b1", "b2"], [3, 4]),
    ):
        ids = [answers[ref]["message_id"] for ref in refs]
        assert ids == sorted(ids)
        listed = (await client.get(f"/queues/{queue}/messages")).json()
        assert [m["content"] for m in listed["messages"]] == contents


async def test_a_batch_checks_publish_permission_frame_by_frame(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """In one batch, publishes to a queue the user may publish to land; the others are refused."""
    await make_queue(client, "jobs")
    await make_queue(client, "audit")
    token = await make_user(
        client,
        server,
        "producer",
        [{"pattern": "jobs", "actions": ["publish"]}, {"pattern": "audit", "actions": ["consume"]}],
    )
    async with await open_ws(server, token) as ws:
        frames = [
            {"op": "publish", "queue": queue, "content": n, "ref": n}
            for n, queue in enumerate(["jobs", "audit", "jobs", "audit", "jobs"])
        ]
        await send(ws, op="batch", frames=frames)
        answers: dict[int, dict[str, Any]] = {}
        while len(answers) < len(frames):
            answer = await recv(ws)
            answers[answer["ref"]] = answer
    assert [answers[n]["op"] for n in range(5)] == [
        "confirm",
        "error",
        "confirm",
        "error",
        "confirm",
    ]
    assert answers[1]["code"] == answers[3]["code"] == "forbidden", answers[1]
    assert (await client.get("/queues/jobs")).json()["pending"] == 3
    assert (await client.get("/queues/audit")).json()["pending"] == 0

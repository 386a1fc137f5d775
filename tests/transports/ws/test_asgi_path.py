"""``/ws`` over plain ASGI: a server without the direct data path (`transports.ws.direct`).

Another ASGI server, or uvicorn's own WebSocket protocol, gives the session
no `DirectSocket`: every frame then goes through ASGI ``send`` and
``receive``. The codecs encode frames to bytes; these tests check that the
ASGI path still sends JSON as text and MessagePack as binary, one frame at a
time and in batches, and the endpoint's own ``authenticated`` reply.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from tests.conftest import BrokerServer, make_settings
from tests.transports.ws.test_endpoint import (
    eventually,
    make_queue,
    open_ws,
    recv,
    send,
    subscribe,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import httpx


@pytest.fixture
async def server(tmp_path: Path, settings_overrides: dict[str, Any]) -> AsyncIterator[BrokerServer]:
    """A broker served with uvicorn's own sans-I/O WebSocket protocol (no direct path)."""
    broker = BrokerServer(make_settings(tmp_path / "data", **settings_overrides))
    broker.ws_protocol = "websockets-sansio"
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def test_json_frames_are_text_from_auth_to_ack(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """An auth frame, a publish, a subscription, the delivery and its ack, as text frames."""
    await make_queue(client)
    async with await open_ws(server, None) as ws:
        await send(ws, op="auth", token=admin_token, ref="a")
        raw = await ws.recv()
        assert isinstance(raw, str) and json.loads(raw)["op"] == "authenticated"
        await send(ws, op="publish", queue="jobs", content={"n": 1}, ref=1)
        assert (await recv(ws))["op"] == "confirm"
        await subscribe(ws, prefetch=5)
        delivery = await recv(ws)
        assert (delivery["op"], delivery["content"]) == ("deliver", {"n": 1})
        await send(ws, op="ack", tags=[delivery["tag"]])
        await eventually(client, processing=0, pending=0)


async def test_json_batches_are_one_text_frame(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """With ``?batch=true`` the confirms of a batch of publishes come back in batch frames."""
    await make_queue(client)
    async with await open_ws(server, admin_token, query="?batch=true") as ws:
        frames = [{"op": "publish", "queue": "jobs", "content": n, "ref": n} for n in range(20)]
        await ws.send(json.dumps({"op": "batch", "frames": frames}))
        refs: list[int] = []
        while len(refs) < 20:
            raw = await ws.recv()
            assert isinstance(raw, str)
            answer = json.loads(raw)
            inner = answer["frames"] if answer["op"] == "batch" else [answer]
            refs += [frame["ref"] for frame in inner if frame["op"] == "confirm"]
        assert refs == list(range(20))


async def test_msgpack_frames_are_binary(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """On the ``msgpack`` subprotocol the confirm is a binary MessagePack frame."""
    await make_queue(client)
    async with await open_ws(server, admin_token, subprotocols=["msgpack"]) as ws:
        publish = {"op": "publish", "queue": "jobs", "content": [1, 2], "ref": 7}
        await ws.send(msgspec.msgpack.encode(publish))
        raw = await ws.recv()
        assert isinstance(raw, bytes)
        answer = msgspec.msgpack.decode(raw)
        assert (answer["op"], answer["ref"]) == ("confirm", 7)

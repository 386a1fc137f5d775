"""A message stored before the input rule, that no consumer can be sent, wedges nothing.

DESIGN.md, "Trust": such a message is failed (or dead-lettered) with a
reason, never redelivered in a loop; the WebSocket session, the GraphQL
subscription and the REST poll that met it go on, and the messages behind it
are delivered. The poison is written straight into the SQLite file of a
stopped broker, as an older broker would have stored it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import MS, login
from transports.decoding import UNDELIVERABLE

if TYPE_CHECKING:
    from tests.conftest import BrokerServer

POISONS = [
    pytest.param(b'"\xff\xfe"', id="invalid-utf8"),
    pytest.param(rb'"\ud800"', id="lone-surrogate"),
]
TIMEOUT = 5000 * MS


async def plant(server: BrokerServer, poison: bytes, *, dlq: bool = False) -> tuple[str, int]:
    """Queue ``jobs`` holding the poison first and two good messages; a fresh admin token.

    Returns the token and the poison's message id.
    """
    token = (await login(server.url))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        if dlq:
            assert (await client.post("/queues", json={"name": "dead"})).status_code == 201
        options = {"dead_letter_queue": "dead"} if dlq else {}
        response = await client.post("/queues", json={"name": "jobs", **options})
        assert response.status_code == 201, response.text
        messages = [{"content": "placeholder"}, {"content": {"n": 1}}, {"content": {"n": 2}}]
        response = await client.post("/queues/jobs/messages/batch", json={"messages": messages})
        poison_id = int(response.json()["messages"][0]["message_id"])
    await server.stop()
    with sqlite3.connect(server.settings.sqlite_path) as db:
        db.execute(
            "UPDATE messages SET content = ?, size = ?, body_ref = NULL WHERE id = ?",
            (poison, len(poison), poison_id),
        )
    db.close()
    await server.restart()
    return str((await login(server.url))["access_token"]), poison_id


async def message(server: BrokerServer, token: str, queue: str, id: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        response = await client.get(f"/queues/{queue}/messages/{id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def eventually_failed(server: BrokerServer, token: str, id: int, queue: str = "jobs") -> None:
    """Wait until message ``id`` of ``queue`` is failed as undeliverable."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            found = await message(server, token, queue, id)
            if found["status"] == "failed":
                assert found["last_error"] == UNDELIVERABLE, found
                assert found["content"] is None
                return
            await asyncio.sleep(10 * MS)


async def open_ws(server: BrokerServer, token: str, subprotocol: str) -> ClientConnection:
    return await connect(
        f"{server.ws_url}/ws",
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=[subprotocol],  # type: ignore[list-item]
        compression=None,
        open_timeout=TIMEOUT,
    )


async def recv_frame(ws: ClientConnection) -> dict[str, Any]:
    data = await asyncio.wait_for(ws.recv(), TIMEOUT)
    frame: dict[str, Any] = (
        msgspec.msgpack.decode(data) if isinstance(data, bytes) else json.loads(data)
    )
    return frame


@pytest.mark.parametrize("poison", POISONS)
@pytest.mark.parametrize("subprotocol", ["json", "msgpack"])
async def test_ws_consumer_gets_the_messages_behind_a_poison_one(
    server: BrokerServer, poison: bytes, subprotocol: str
) -> None:
    """A WebSocket consumer skips a poison message (failed, with why) and stays connected."""
    token, poison_id = await plant(server, poison)
    async with await open_ws(server, token, subprotocol) as ws:
        frame = {"op": "subscribe", "queue": "jobs", "prefetch": 10, "ref": "s"}
        await ws.send(
            msgspec.msgpack.encode(frame) if subprotocol == "msgpack" else json.dumps(frame)
        )
        assert (await recv_frame(ws))["op"] == "subscribed"
        deliveries = [await recv_frame(ws), await recv_frame(ws)]
        assert [d["content"] for d in deliveries] == [{"n": 1}, {"n": 2}]
        assert all(d["attempt"] == 1 for d in deliveries)
        await eventually_failed(server, token, poison_id)
        assert ws.close_code is None


async def test_poison_message_is_dead_lettered_when_the_queue_has_a_dlq(
    server: BrokerServer,
) -> None:
    """With a dead-letter queue, the poison message goes there with the reason."""
    token, _ = await plant(server, b'"\xc0\xaf"', dlq=True)
    async with await open_ws(server, token, "json") as ws:
        await ws.send(json.dumps({"op": "subscribe", "queue": "jobs", "ref": "s"}))
        assert (await recv_frame(ws))["op"] == "subscribed"
        assert (await recv_frame(ws))["content"] == {"n": 1}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        async with asyncio.timeout(TIMEOUT):
            while True:
                dead_letters = (await client.get("/queues/dead/messages")).json()["messages"]
                if dead_letters:
                    break
                await asyncio.sleep(10 * MS)
        [dead] = dead_letters
    assert (dead["dead_lettered_from"], dead["content"]) == ("jobs", None)
    assert UNDELIVERABLE in dead["last_error"]


@pytest.mark.parametrize("poison", POISONS)
async def test_graphql_subscription_gets_the_messages_behind_a_poison_one(
    server: BrokerServer, poison: bytes
) -> None:
    """A GraphQL ``messages`` subscription skips a poison message and goes on."""
    token, poison_id = await plant(server, poison)
    transport = WebsocketsTransport(
        url=f"{server.ws_url}/graphql",
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        connect_timeout=TIMEOUT,
        ack_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    )
    query = 'subscription { messages(queue: "jobs", prefetch: 5) { messageId content } }'
    async with Client(transport=transport, execute_timeout=TIMEOUT) as session:
        events = session.subscribe(GraphQLRequest(query))
        async with asyncio.timeout(TIMEOUT):
            first = await anext(events)
            second = await anext(events)
        assert [first["messages"]["content"], second["messages"]["content"]] == [
            {"n": 1},
            {"n": 2},
        ]
        await eventually_failed(server, token, poison_id)
        await events.aclose()


@pytest.mark.parametrize("poison", POISONS)
async def test_rest_consume_answers_the_good_messages_and_fails_the_poison(
    server: BrokerServer, poison: bytes
) -> None:
    """REST consume answers valid JSON with the good messages; the poison one is failed."""
    token, poison_id = await plant(server, poison)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        response = await client.get("/queues/jobs/messages/consume", params={"max": 10})
        assert response.status_code == 200
        contents = [m["content"] for m in json.loads(response.content)["messages"]]
    assert contents == [{"n": 1}, {"n": 2}]
    await eventually_failed(server, token, poison_id)


@pytest.mark.parametrize("poison", POISONS)
async def test_rest_browse_answers_valid_json_with_a_poison_message(
    server: BrokerServer, poison: bytes
) -> None:
    """Browsing shows a poison message with content null and why, in valid JSON."""
    token, poison_id = await plant(server, poison)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        response = await client.get("/queues/jobs/messages")
    messages = json.loads(response.content.decode())["messages"]
    first = messages[0]
    assert (first["message_id"], first["content"], first["status"]) == (poison_id, None, "pending")
    assert messages[0]["last_error"] == UNDELIVERABLE
    assert [m["content"] for m in messages[1:]] == [{"n": 1}, {"n": 2}]

"""Topic publishes over the WebSocket: ``publish {topic, routing_key}`` -> ``confirm {routed}``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.conftest import make_user
from tests.transports.ws.test_endpoint import open_ws, recv, send, subscribe

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer


async def _setup(client: httpx.AsyncClient, **options: Any) -> None:
    for queue in ("eu", "all"):
        response = await client.post("/queues", json={"name": queue, **options})
        assert response.status_code == 201, response.text
    assert (await client.post("/topics", json={"name": "orders"})).status_code == 201
    for queue, pattern in (("eu", "orders.eu.*"), ("all", "orders.#"), ("eu", "#")):
        bound = await client.post(
            "/topics/orders/bindings", json={"queue": queue, "pattern": pattern}
        )
        assert bound.status_code == 201


async def test_topic_publish_is_confirmed_with_routed(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A topic publish is confirmed with each matched queue once, and is delivered from it."""
    await _setup(client)
    async with await open_ws(server, admin_token) as ws:
        await send(
            ws, op="publish", topic="orders", routing_key="orders.eu.new", content={"a": 1}, ref=1
        )
        confirm = await recv(ws)
        assert confirm["op"] == "confirm"
        assert confirm["ref"] == 1
        assert "message_id" not in confirm
        routed = {r["queue"]: r["message_id"] for r in confirm["routed"]}
        assert sorted(routed) == ["all", "eu"]
        await subscribe(ws, queue="eu")
        delivered = await recv(ws)
        assert delivered["message_id"] == routed["eu"]
        assert delivered["content"] == {"a": 1}


async def test_topic_publish_without_match_and_in_a_batch(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """An unmatched key confirms routed: []; topic and queue publishes mix in one batch."""
    await _setup(client)
    async with await open_ws(server, admin_token) as ws:
        await send(
            ws,
            op="batch",
            frames=[
                {"op": "publish", "queue": "all", "content": 1, "ref": "q"},
                {"op": "publish", "topic": "orders", "routing_key": "x", "content": 2, "ref": "t"},
            ],
        )
        replies = {reply["ref"]: reply for reply in [await recv(ws), await recv(ws)]}
    assert replies["q"]["message_id"] > 0
    assert [r["queue"] for r in replies["t"]["routed"]] == ["eu"]  # only '#' matches 'x'
    assert (await client.get("/queues/all")).json()["pending"] == 1


async def test_topic_publish_errors_keep_the_connection(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Bad keys, unknown topics, a missing key and a full queue answer errors; the socket stays."""
    await _setup(client, max_length=1)
    async with await open_ws(server, admin_token) as ws:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"topic": "orders", "routing_key": "a.*"}, "invalid"),
            ({"topic": "orders", "routing_key": "a..b"}, "invalid"),
            ({"topic": "nope", "routing_key": "a"}, "topic_not_found"),
            ({"topic": "orders"}, "invalid"),
            ({"topic": "orders", "routing_key": "a", "queue": "eu"}, "invalid"),
            ({"routing_key": "a"}, "invalid"),
        ]
        for ref, (frame, code) in enumerate(cases):
            await send(ws, op="publish", content=0, ref=ref, **frame)
            reply = await recv(ws)
            assert (reply["op"], reply["code"], reply["ref"]) == ("error", code, ref), reply
        await send(ws, op="publish", topic="orders", routing_key="orders.eu.x", content=1, ref="a")
        assert (await recv(ws))["op"] == "confirm"
        await send(ws, op="publish", topic="orders", routing_key="orders.eu.x", content=1, ref="b")
        full = await recv(ws)
        assert (full["op"], full["code"]) == ("error", "queue_full")
        await send(ws, op="publish", queue="eu", content=1, ref="c")
        assert (await recv(ws))["code"] == "queue_full"
    assert (await client.get("/queues/all")).json()["pending"] == 1


async def test_topic_publish_needs_publish_on_the_topic(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A user with publish on the queues but not the topic is refused."""
    await _setup(client)
    token = await make_user(client, server, "u", [{"pattern": "orders", "actions": ["consume"]}])
    async with await open_ws(server, token) as ws:
        await send(ws, op="publish", topic="orders", routing_key="a", content=1, ref=1)
        reply = await recv(ws)
    assert (reply["op"], reply["code"]) == ("error", "forbidden")

"""Results and histories over GraphQL: ack(result), message(id) { history }, messageResult."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tests.transports.graphql.test_http import data_of, error_of
from tests.transports.graphql.test_subscriptions import (
    make_queue,
    next_of,
    protocol as protocol,
    publish,
    subscribe,
    ws_session,
)

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer

ACK = "mutation($id: Long!, $r: JSON) { ack(messageId: $id, result: $r) { status } }"
MESSAGE = """
query($id: Long!) { message(id: $id) { messageId queue status result lastError history } }
"""
RESULT = "subscription($id: Long!) { messageResult(messageId: $id) { status result } }"


async def lease(client: httpx.AsyncClient) -> int:
    response = await client.get("/queues/jobs/messages/consume", params={"wait": 5})
    assert response.status_code == 200, response.text
    return int(response.json()["messages"][0]["message_id"])


async def test_ack_result_wakes_a_message_result_subscription(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    await make_queue(client)
    id = await publish(client, {"n": 2})
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(session, RESULT, id=id)
        waiting = asyncio.ensure_future(next_of(events))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert await lease(client) == id
        data = await data_of(client, ACK, id=id, r={"doubled": 4})
        assert data["ack"]["status"] == "processed"
        event = await waiting
        await events.aclose()
    assert event["messageResult"] == {"status": "processed", "result": {"doubled": 4}}


async def test_message_query_has_result_and_history(client: httpx.AsyncClient) -> None:
    await make_queue(client)
    id = await publish(client, "x")
    assert await lease(client) == id
    await data_of(
        client, 'mutation($id: Long!) { nack(messageId: $id, reason: "boom") { status } }', id=id
    )
    assert await lease(client) == id
    await data_of(client, ACK, id=id, r=[1, 2])
    message = (await data_of(client, MESSAGE, id=id))["message"]
    assert (message["status"], message["result"]) == ("processed", [1, 2])
    names = [event["event"] for event in message["history"]]
    assert names == ["published", "delivered", "nacked", "delivered", "acked"]
    assert message["history"][2]["reason"] == "boom"


async def test_ack_result_over_the_limit_is_an_error(client: httpx.AsyncClient) -> None:
    await make_queue(client)
    id = await publish(client, "x")
    assert await lease(client) == id
    error = await error_of(client, ACK, id=id, r="y" * 70_000)
    assert "result" in error["message"]
    assert error["extensions"]["status"] == 422

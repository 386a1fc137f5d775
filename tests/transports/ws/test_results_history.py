"""Results and histories over the WebSocket: an ack frame's ``result``, delivered by whom."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tests.transports.ws.test_endpoint import (
    make_queue,
    open_ws,
    publish_rest,
    recv,
    send,
    subscribe,
)

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer


async def test_ack_frame_result_wakes_a_rest_waiter(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    await make_queue(client)
    [id] = await publish_rest(client, ["job"])
    waiter = asyncio.create_task(client.get(f"/messages/{id}/result", params={"wait": 10}))
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws)
        frame = await recv(ws)
        assert frame["message_id"] == id
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await send(ws, op="ack", tags=[frame["tag"]], result={"answer": 42})
        response = await asyncio.wait_for(waiter, 5)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"answer": 42}
    history = (await client.get(f"/messages/{id}/history")).json()["events"]
    delivered = [event for event in history if event["event"] == "delivered"]
    assert delivered[0]["transport"] == "ws"
    assert delivered[0]["user"] == "admin"
    assert [event["event"] for event in history] == ["published", "delivered", "acked"]


async def test_ack_frame_result_over_the_limit_is_an_error_and_keeps_the_lease(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    await make_queue(client)
    [id] = await publish_rest(client, ["job"])
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws)
        frame = await recv(ws)
        await send(ws, op="ack", tags=[frame["tag"]], result="x" * 70_000, ref="a")
        error = await recv(ws)
        assert error["op"] == "error", error
        assert "result" in str(error)
        await send(ws, op="ack", tags=[frame["tag"]])
        await asyncio.sleep(0.2)
    response = await client.get(f"/messages/{id}/result", params={"wait": 5})
    assert response.json()["status"] == "processed"

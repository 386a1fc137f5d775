"""Results and histories over REST on SQLite: ack results, waiting for them, the life story."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tests.conftest import make_user

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer


async def make_queue(client: httpx.AsyncClient, name: str = "jobs", **options: Any) -> None:
    response = await client.post("/queues", json={"name": name, **options})
    assert response.status_code == 201, response.text


async def publish(client: httpx.AsyncClient, content: Any, queue: str = "jobs") -> int:
    response = await client.post(f"/queues/{queue}/messages", json={"content": content})
    assert response.status_code == 201, response.text
    return int(response.json()["message_id"])


async def lease(client: httpx.AsyncClient, queue: str = "jobs", lease_s: float = 30) -> int:
    response = await client.get(
        f"/queues/{queue}/messages/consume", params={"wait": 5, "lease": lease_s}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["messages"][0]["message_id"])


async def events_of(client: httpx.AsyncClient, id: int) -> list[dict[str, Any]]:
    response = await client.get(f"/messages/{id}/history")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message_id"] == id
    events: list[dict[str, Any]] = body["events"]
    return events


async def test_result_arrives_while_a_waiter_waits(client: httpx.AsyncClient) -> None:
    await make_queue(client)
    id = await publish(client, {"n": 1})
    waiter = asyncio.create_task(client.get(f"/messages/{id}/result", params={"wait": 10}))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    assert await lease(client) == id
    acked = await client.post(f"/messages/{id}/ack", json={"result": {"sum": 42}})
    assert acked.status_code == 200, acked.text
    response = await asyncio.wait_for(waiter, 5)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "message_id": id,
        "queue": "jobs",
        "status": "processed",
        "result": {"sum": 42},
        "last_error": None,
    }


async def test_waiter_times_out_with_204_and_publish_wait_202(client: httpx.AsyncClient) -> None:
    await make_queue(client)
    id = await publish(client, "x")
    response = await client.get(f"/messages/{id}/result", params={"wait": 0.3})
    assert response.status_code == 204
    published = await client.post(
        "/queues/jobs/messages", params={"wait_result": 0.3}, json={"content": "y"}
    )
    assert published.status_code == 202, published.text
    assert published.json()["status"] == "pending"


async def test_publish_and_wait_gets_the_result(client: httpx.AsyncClient) -> None:
    await make_queue(client)

    async def worker() -> None:
        id = await lease(client)
        await client.post(f"/messages/{id}/ack", json={"result": [1, "two"]})

    task = asyncio.create_task(worker())
    published = await client.post(
        "/queues/jobs/messages", params={"wait_result": 10}, json={"content": "job"}
    )
    await task
    assert published.status_code == 201, published.text
    body = published.json()
    assert body["status"] == "processed"
    assert body["result"] == [1, "two"]


async def test_bad_input_is_a_422(server: BrokerServer, client: httpx.AsyncClient) -> None:
    await make_queue(client)
    id = await publish(client, "x")
    assert (await client.get(f"/messages/{id}/result", params={"wait": 31})).status_code == 422
    response = await client.post(
        "/queues/jobs/messages", params={"wait_result": 60}, json={"content": "y"}
    )
    assert response.status_code == 422
    assert "wait_result" in response.json()["detail"]
    assert await lease(client) == id
    big = {"result": "x" * (64 * 1024 + 1)}
    response = await client.post(f"/messages/{id}/ack", json=big)
    assert response.status_code == 422, response.text
    assert "result" in response.json()["detail"]
    response = await client.post(f"/messages/{id}/ack", json={"result": 1, "extra": 2})
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_field"
    # Nothing was lost: the message is still held and can be acked.
    assert (await client.post(f"/messages/{id}/ack")).status_code == 200
    assert (await client.get(f"/messages/{id}/result")).json()["result"] is None


async def test_history_of_a_long_life_in_order(client: httpx.AsyncClient) -> None:
    await make_queue(client, "dead")
    await make_queue(client, max_attempts=3, dead_letter_queue="dead")
    id = await publish(client, "job")
    assert await lease(client) == id
    nacked = await client.post(f"/messages/{id}/nack", params={"reason": "boom"})
    assert nacked.status_code == 200
    assert await lease(client, lease_s=0.2) == id
    await asyncio.sleep(0.6)  # the lease expires
    assert await lease(client) == id
    failed = await client.post(f"/messages/{id}/nack", params={"requeue": "false"})
    assert failed.status_code == 200
    retried = await client.post("/queues/dead/redrive")
    assert retried.status_code in (200, 201), retried.text
    assert await lease(client) == id
    assert (await client.post(f"/messages/{id}/ack", json={"result": "ok"})).status_code == 200
    events = await events_of(client, id)
    names = [event["event"] for event in events]
    assert names == [
        "published",
        "delivered",
        "nacked",
        "delivered",
        "lease_expired",
        "delivered",
        "dead_lettered",
        "retried",
        "delivered",
        "acked",
    ], events
    assert events[1]["attempt"] == 1
    assert events[2]["reason"] == "boom"
    assert events[2]["requeue"] is True
    assert events[6]["to"] == "dead"
    assert events[7]["to"] == "jobs"
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


async def test_history_and_results_survive_a_restart(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    await make_queue(client)
    id = await publish(client, "job")
    assert await lease(client) == id
    await client.post(f"/messages/{id}/ack", json={"result": {"ok": True}})
    before = await events_of(client, id)
    await server.restart()
    from tests.conftest import login

    token = (await login(server.url))["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    assert await events_of(client, id) == before
    response = await client.get(f"/messages/{id}/result")
    assert response.json()["result"] == {"ok": True}


async def test_reading_needs_consume_or_manage(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    await make_queue(client)
    id = await publish(client, "job")
    token = await make_user(client, server, "pub", [{"pattern": "jobs", "actions": ["publish"]}])
    headers = {"Authorization": f"Bearer {token}"}
    for path in (f"/messages/{id}/result", f"/messages/{id}/history"):
        response = await client.get(path, headers=headers)
        assert response.status_code == 403, response.text
    reader = await make_user(
        client, server, "reader", [{"pattern": "jobs", "actions": ["consume"]}]
    )
    response = await client.get(
        f"/messages/{id}/history", headers={"Authorization": f"Bearer {reader}"}
    )
    assert response.status_code == 200


async def waiting_of(client: httpx.AsyncClient, id: int, queue: str = "jobs") -> str | None:
    response = await client.get(f"/queues/{queue}/messages/{id}")
    assert response.status_code == 200, response.text
    waiting: str | None = response.json()["waiting"]
    return waiting


async def test_waiting_says_why_a_pending_message_waits(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    from tests.transports.ws.test_endpoint import open_ws, recv, subscribe

    await make_queue(client)
    id = await publish(client, "first")
    assert await waiting_of(client, id) == "no_consumer"
    browse = await client.get("/queues/jobs/messages", params={"status": "pending"})
    assert browse.json()["messages"][0]["waiting"] == "no_consumer"
    delayed = await client.post("/queues/jobs/messages", json={"content": "d", "delay_ms": 60000})
    assert await waiting_of(client, delayed.json()["message_id"]) == "delayed"
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws, prefetch=1)
        frame = await recv(ws)
        assert frame["message_id"] == id
        second = await publish(client, "second")
        assert await waiting_of(client, second) == "consumers_full"
        assert (await client.post("/queues/jobs/pause")).status_code == 200
        assert await waiting_of(client, second) == "paused"
    response = await client.get(f"/queues/jobs/messages/{id}")
    assert response.json()["waiting"] in ("paused", None)  # requeued by the closed socket


async def test_history_can_be_turned_off(tmp_path: Any) -> None:
    from tests.conftest import BrokerServer, login, make_settings

    server = BrokerServer(make_settings(tmp_path / "data", history=False))
    await server.start()
    try:
        import httpx

        token = (await login(server.url))["access_token"]
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            await make_queue(client)
            id = await publish(client, "x")
            assert await lease(client) == id
            assert (await client.post(f"/messages/{id}/ack", json={"result": 1})).status_code == 200
            assert await events_of(client, id) == []
            assert (await client.get(f"/messages/{id}/result")).json()["result"] == 1
    finally:
        await server.stop()

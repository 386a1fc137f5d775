"""REST end to end: queues, publish, consume, ack/nack, browse, retry, on a real server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer


async def make_queue(client: httpx.AsyncClient, name: str = "jobs", **options: object) -> None:
    response = await client.post("/queues", json={"name": name, **options})
    assert response.status_code == 201, response.text


async def publish(
    client: httpx.AsyncClient, content: object, queue: str = "jobs", **extra: object
) -> int:
    response = await client.post(f"/queues/{queue}/messages", json={"content": content, **extra})
    assert response.status_code == 201, response.text
    return int(response.json()["message_id"])


async def consume(
    client: httpx.AsyncClient, queue: str = "jobs", **params: str | int | float
) -> list[dict[str, Any]]:
    response = await client.get(f"/queues/{queue}/messages/consume", params=params)
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


async def test_queue_crud(client: httpx.AsyncClient) -> None:
    """A queue can be created, listed, read, patched and deleted."""
    await make_queue(client, max_attempts=3)
    listed = (await client.get("/queues")).json()
    assert [q["name"] for q in listed] == ["jobs"]
    info = (await client.get("/queues/jobs")).json()
    assert info["max_attempts"] == 3
    assert {"name", "created_at", "updated_at", "pending", "processing", "processed", "failed",
            "consumers"} <= set(info)  # fmt: skip
    patched = await client.patch("/queues/jobs", json={"max_attempts": 5, "lease": 2.5})
    assert patched.status_code == 200, patched.text
    assert patched.json()["max_attempts"] == 5
    assert patched.json()["lease"] == 2.5
    assert (await client.delete("/queues/jobs")).status_code == 204
    assert (await client.get("/queues/jobs")).status_code == 404


async def test_create_existing_queue_conflicts(client: httpx.AsyncClient) -> None:
    """Creating a queue twice answers 409."""
    await make_queue(client)
    response = await client.post("/queues", json={"name": "jobs"})
    assert response.status_code == 409
    assert response.json()["detail"]


async def test_full_lifecycle(client: httpx.AsyncClient) -> None:
    """Publish, consume (processing), ack (processed), with counts along the way."""
    await make_queue(client)
    message_id = await publish(client, {"order": 7}, headers={"kind": "order"})
    assert (await client.get("/queues/jobs")).json()["pending"] == 1
    [message] = await consume(client)
    assert message["message_id"] == message_id
    assert message["status"] == "processing"
    assert message["content"] == {"order": 7}
    assert message["headers"] == {"kind": "order"}
    assert message["attempt"] == 1
    assert message["redelivered"] is False
    assert (await client.get("/queues/jobs")).json()["processing"] == 1
    response = await client.post(f"/messages/{message_id}/ack")
    assert response.status_code == 200, response.text
    info = (await client.get("/queues/jobs")).json()
    assert (info["pending"], info["processing"], info["processed"]) == (0, 0, 1)


async def test_nack_requeue_redelivers_marked(client: httpx.AsyncClient) -> None:
    """A nacked message comes back with attempt 2 and redelivered true."""
    await make_queue(client)
    await publish(client, "x")
    [first] = await consume(client)
    assert (
        await client.post(f"/messages/{first['message_id']}/nack?requeue=true")
    ).status_code == 200
    [again] = await consume(client)
    assert again["message_id"] == first["message_id"]
    assert (again["attempt"], again["redelivered"]) == (2, True)


async def test_nack_without_requeue_fails_and_retry_restores(client: httpx.AsyncClient) -> None:
    """A message nacked without requeue is failed; retry puts it back to pending."""
    await make_queue(client)
    message_id = await publish(client, "x")
    await consume(client)
    assert (
        await client.post(f"/messages/{message_id}/nack", params={"requeue": "false"})
    ).status_code == 200
    failed = (await client.get("/queues/jobs/messages", params={"status": "failed"})).json()
    assert [m["message_id"] for m in failed["messages"]] == [message_id]
    assert (await client.get("/queues/jobs")).json()["failed"] == 1
    retried = await client.post(f"/queues/jobs/messages/{message_id}/retry")
    assert retried.status_code == 200, retried.text
    [message] = await consume(client)
    assert message["message_id"] == message_id
    assert message["attempt"] == 1


async def test_consume_long_poll_waits_for_publish(
    client: httpx.AsyncClient, server: BrokerServer
) -> None:
    """A consume with wait returns the message published while it waits."""
    import asyncio

    await make_queue(client)
    waiting = asyncio.create_task(consume(client, wait=5))
    await asyncio.sleep(0.1)
    message_id = await publish(client, "late")
    [message] = await waiting
    assert message["message_id"] == message_id


async def test_consume_empty_queue_answers_204(client: httpx.AsyncClient) -> None:
    """With nothing pending, consume answers 204 after its wait."""
    await make_queue(client)
    response = await client.get("/queues/jobs/messages/consume", params={"wait": 0.2})
    assert response.status_code == 204


async def test_lease_expiry_requeues(client: httpx.AsyncClient) -> None:
    """A message not acked within its lease is delivered again, marked redelivered."""
    import asyncio

    await make_queue(client)
    await publish(client, "x")
    [first] = await consume(client, lease=0.2)
    await asyncio.sleep(0.4)
    [again] = await consume(client, wait=2)
    assert again["message_id"] == first["message_id"]
    assert again["redelivered"] is True


async def test_batch_publish_and_batch_ack(client: httpx.AsyncClient) -> None:
    """A batch publish answers the messages in order; one call acks them all."""
    await make_queue(client)
    response = await client.post(
        "/queues/jobs/messages/batch", json={"messages": [{"content": i} for i in range(5)]}
    )
    assert response.status_code == 201, response.text
    ids = [m["message_id"] for m in response.json()["messages"]]
    assert ids == sorted(ids)
    messages = await consume(client, max=10)
    assert [m["content"] for m in messages] == list(range(5))
    settled = (await client.post("/messages/ack", json={"ids": ids})).json()
    assert sorted(settled["settled"]) == ids
    assert (await client.get("/queues/jobs")).json()["processed"] == 5


async def test_browse_pages_with_cursor(client: httpx.AsyncClient) -> None:
    """Browsing walks a queue in pages linked by next_cursor."""
    await make_queue(client)
    ids = [await publish(client, i) for i in range(5)]
    first = (await client.get("/queues/jobs/messages", params={"limit": 3})).json()
    assert [m["message_id"] for m in first["messages"]] == ids[:3]
    second = (
        await client.get(
            "/queues/jobs/messages", params={"limit": 3, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [m["message_id"] for m in second["messages"]] == ids[3:]
    assert second["next_cursor"] is None


async def test_purge_empties_pending(client: httpx.AsyncClient) -> None:
    """Purge deletes pending messages and says how many."""
    await make_queue(client)
    for i in range(3):
        await publish(client, i)
    response = await client.post("/queues/jobs/purge")
    assert response.json() == {"purged": 3}
    assert (await client.get("/queues/jobs")).json()["pending"] == 0


async def test_restart_keeps_queues_and_messages(
    client: httpx.AsyncClient, server: BrokerServer
) -> None:
    """After a restart the queue, its options and its pending messages are back."""
    import httpx as httpx_module

    await make_queue(client, max_attempts=4)
    ids = [await publish(client, i) for i in range(3)]
    await server.restart()
    from tests.conftest import login

    token = (await login(server.url))["access_token"]
    async with httpx_module.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as fresh:
        info = (await fresh.get("/queues/jobs")).json()
        assert (info["pending"], info["max_attempts"]) == (3, 4)
        messages = await consume(fresh, max=10)
        assert [m["message_id"] for m in messages] == ids
        assert all(m["redelivered"] is False for m in messages)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/queues", b"{not json", 400),
        ("/queues", b'{"name": 5}', 422),
        ("/queues", b'{"name": ""}', 422),
        ("/queues", b'{"name": "' + b"x" * 201 + b'"}', 422),
        ("/queues", b'{"name": "a/b"}', 422),
        ("/queues", b'{"name": "ok", "max_attempts": -1}', 422),
        ("/queues/jobs/messages", b"{not json", 400),
        ("/queues/jobs/messages", b"[]", 422),
        ("/queues/jobs/messages", b'{"headers": {}}', 422),
        ("/queues/jobs/messages", b'{"content": 1, "priority": 10}', 422),
        ("/queues/jobs/messages", b'{"content": 1, "headers": {"a": 1}}', 422),
        ("/queues/missing/messages", b'{"content": 1}', 404),
        ("/queues/jobs/messages/batch", b'{"messages": []}', 422),
        ("/messages/ack", b'{"ids": "x"}', 422),
        ("/messages/999/ack", b"", 409),
        ("/messages/abc/ack", b"", 404),
    ],
)
async def test_bad_input_gets_4xx(
    client: httpx.AsyncClient, path: str, body: bytes, status: int
) -> None:
    """Malformed or invalid input answers a precise 4xx with a detail, and changes nothing."""
    await make_queue(client)
    message_id = await publish(client, "keep")
    response = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    info = (await client.get("/queues/jobs")).json()
    assert info["pending"] == 1
    [message] = await consume(client)
    assert message["message_id"] == message_id


async def test_oversize_body_is_413(client: httpx.AsyncClient, server: BrokerServer) -> None:
    """A body over the size limit answers 413 and stores nothing."""
    await make_queue(client)
    big = "x" * (server.settings.max_body_bytes + 10)
    response = await client.post("/queues/jobs/messages", json={"content": big})
    assert response.status_code == 413
    assert (await client.get("/queues/jobs")).json()["pending"] == 0


async def test_oversize_message_is_413(client: httpx.AsyncClient, server: BrokerServer) -> None:
    """A message over max_message_bytes (but under the body limit) answers 413."""
    await make_queue(client)
    big = "x" * (server.settings.max_message_bytes + 10)
    response = await client.post("/queues/jobs/messages", json={"content": big})
    assert response.status_code == 413


async def test_ack_of_pending_message_is_409(client: httpx.AsyncClient) -> None:
    """Acking a message that is not processing answers 409 and leaves it pending."""
    await make_queue(client)
    message_id = await publish(client, "x")
    response = await client.post(f"/messages/{message_id}/ack")
    assert response.status_code == 409
    assert (await client.get("/queues/jobs")).json()["pending"] == 1


async def test_every_route_has_openapi(client: httpx.AsyncClient) -> None:
    """The OpenAPI document lists the contract's routes."""
    schema = (await client.get("/schema/openapi.json")).json()
    paths = ["/queues", "/queues/{name}", "/queues/{name}/messages",
             "/queues/{name}/messages/consume", "/messages/{message_id}/ack", "/auth/token",
             "/health"]  # fmt: skip
    for path in paths:
        assert path in schema["paths"], path
    body = schema["paths"]["/queues/{name}/messages"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("PublishRequest")


async def test_batch_ack_over_max_batch_is_413(
    client: httpx.AsyncClient, server: BrokerServer
) -> None:
    """Settling more ids than max_batch in one call answers 413."""
    ids = list(range(1, server.settings.max_batch + 2))
    response = await client.post("/messages/ack", json={"ids": ids})
    assert response.status_code == 413


async def test_consumers_lists_push_consumers(
    client: httpx.AsyncClient, server: BrokerServer
) -> None:
    """GET /consumers shows each push consumer with its prefetch and unacked count."""
    await make_queue(client)
    await publish(client, "x")
    broker = server.ctx.broker
    await broker.subscribe("jobs", 3, lambda queue, entries: None, label="test")
    [row] = (await client.get("/consumers")).json()
    assert (row["queue"], row["label"], row["prefetch"], row["unacked"]) == ("jobs", "test", 3, 1)
    assert row["oldest_lease_held_s"] >= 0


@pytest.mark.parametrize("settings_overrides", [{"default_lease_s": 7.5}])
async def test_default_lease_setting_is_the_lease_of_new_queues(
    client: httpx.AsyncClient,
) -> None:
    """BROKER_DEFAULT_LEASE_S is the lease of a queue created without one."""
    await make_queue(client)
    await make_queue(client, name="own", lease=2.0)
    assert (await client.get("/queues/jobs")).json()["lease"] == 7.5
    assert (await client.get("/queues/own")).json()["lease"] == 2.0

"""Queue features over REST: dead-lettering, TTL, delays, priority, dedup, limits, fan-out."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer


async def _queue(client: httpx.AsyncClient, name: str, **options: Any) -> dict[str, Any]:
    response = await client.post("/queues", json={"name": name, **options})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _publish(
    client: httpx.AsyncClient, queue: str, content: Any, **extra: Any
) -> dict[str, Any]:
    response = await client.post(f"/queues/{queue}/messages", json={"content": content, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _consume(client: httpx.AsyncClient, queue: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"/queues/{queue}/messages/consume", params=params)
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    return list(response.json()["messages"])


async def test_max_attempts_dead_letters_with_history(client: httpx.AsyncClient) -> None:
    """After max_attempts deliveries a nacked message lands in the DLQ with its history."""
    await _queue(client, "dead")
    await _queue(client, "work", max_attempts=2, dead_letter_queue="dead")
    message_id = (await _publish(client, "work", "job"))["message_id"]
    for _ in range(2):
        [message] = await _consume(client, "work")
        await client.post(f"/messages/{message['message_id']}/nack", params={"reason": "boom"})
    assert await _consume(client, "work") == []
    [dead] = await _consume(client, "dead")
    assert dead["message_id"] == message_id
    assert dead["dead_lettered_from"] == "work"
    assert dead["last_error"] == "boom"
    assert dead["attempt"] == 1


async def test_nack_without_requeue_dead_letters(client: httpx.AsyncClient) -> None:
    """A rejected message goes to the dead-letter queue when the queue has one."""
    await _queue(client, "dead")
    await _queue(client, "work", dead_letter_queue="dead")
    await _publish(client, "work", "job")
    [message] = await _consume(client, "work")
    await client.post(f"/messages/{message['message_id']}/nack", params={"requeue": "false"})
    assert (await client.get("/queues/dead")).json()["pending"] == 1
    assert (await client.get("/queues/work")).json()["failed"] == 0


async def test_retry_moves_dead_letter_back_to_origin(client: httpx.AsyncClient) -> None:
    """Retrying a dead-lettered message puts it back in its original queue with attempt 0."""
    await _queue(client, "dead")
    await _queue(client, "work", dead_letter_queue="dead")
    message_id = (await _publish(client, "work", "job"))["message_id"]
    assert len(await _consume(client, "work")) == 1
    await client.post(f"/messages/{message_id}/nack", params={"requeue": "false"})
    response = await client.post(f"/queues/dead/messages/{message_id}/retry")
    assert response.status_code == 200, response.text
    assert response.json()["queue"] == "work"
    [again] = await _consume(client, "work")
    assert (again["message_id"], again["attempt"]) == (message_id, 1)
    assert (await client.get("/queues/dead")).json()["pending"] == 0


async def test_redrive_moves_every_failed_message(client: httpx.AsyncClient) -> None:
    """Redrive returns every failed message of a queue to pending."""
    await _queue(client, "work")
    for i in range(3):
        await _publish(client, "work", i)
    for message in await _consume(client, "work", max=3):
        await client.post(f"/messages/{message['message_id']}/nack", params={"requeue": "false"})
    assert (await client.get("/queues/work")).json()["failed"] == 3
    response = await client.post("/queues/work/redrive")
    assert response.json() == {"moved": 3}
    info = (await client.get("/queues/work")).json()
    assert (info["failed"], info["pending"]) == (0, 3)


async def test_delete_of_a_dead_letter_queue_in_use_is_refused(client: httpx.AsyncClient) -> None:
    """A queue that is another queue's dead-letter queue can't be deleted."""
    await _queue(client, "dead")
    await _queue(client, "work", dead_letter_queue="dead")
    assert (await client.delete("/queues/dead")).status_code == 409


async def test_dead_letter_queue_must_exist(client: httpx.AsyncClient) -> None:
    """Naming a missing dead-letter queue answers 404."""
    response = await client.post("/queues", json={"name": "work", "dead_letter_queue": "nope"})
    assert response.status_code == 404


async def test_expired_messages_are_never_delivered(client: httpx.AsyncClient) -> None:
    """A message past its ttl_ms is dropped (or dead-lettered), never delivered."""
    await _queue(client, "dead")
    await _queue(client, "work", dead_letter_queue="dead", message_ttl_ms=60_000)
    await _publish(client, "work", "stale", ttl_ms=50)
    fresh = await _publish(client, "work", "fresh")
    await asyncio.sleep(0.2)
    messages = await _consume(client, "work", max=10)
    assert [m["message_id"] for m in messages] == [fresh["message_id"]]
    [expired] = await _consume(client, "dead")
    assert expired["content"] == "stale"
    assert expired["last_error"] == "expired"


async def test_delayed_message_is_invisible_until_due(client: httpx.AsyncClient) -> None:
    """A message published with delay_ms is not delivered before the delay passes."""
    await _queue(client, "work")
    await _publish(client, "work", "later", delay_ms=300)
    assert await _consume(client, "work") == []
    assert (await client.get("/queues/work")).json()["delayed"] == 1
    [message] = await _consume(client, "work", wait=3)
    assert message["content"] == "later"


async def test_priority_goes_first_and_fifo_within(client: httpx.AsyncClient) -> None:
    """Higher priorities are delivered first, in publish order within one priority."""
    await _queue(client, "work")
    for content, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 9), ("e", 5)]:
        await _publish(client, "work", content, priority=priority)
    messages = await _consume(client, "work", max=10)
    assert [m["content"] for m in messages] == ["d", "b", "e", "a", "c"]


async def test_dedup_id_returns_the_first_message(client: httpx.AsyncClient) -> None:
    """A repeated dedup_id answers the original message id and enqueues nothing."""
    await _queue(client, "work")
    first = await _publish(client, "work", "once", dedup_id="order-1")
    second = await _publish(client, "work", "twice", dedup_id="order-1")
    assert second["message_id"] == first["message_id"]
    assert second["duplicate"] is True
    assert (await client.get("/queues/work")).json()["pending"] == 1


async def test_max_length_rejects_publish(client: httpx.AsyncClient) -> None:
    """With overflow=reject_publish a full queue answers 409 and keeps its messages."""
    await _queue(client, "work", max_length=2)
    await _publish(client, "work", 1)
    await _publish(client, "work", 2)
    response = await client.post("/queues/work/messages", json={"content": 3})
    assert response.status_code == 409
    assert "full" in response.json()["detail"]
    batch = await client.post("/queues/work/messages/batch", json={"messages": [{"content": 4}]})
    assert batch.status_code == 409
    assert [m["content"] for m in await _consume(client, "work", max=10)] == [1, 2]


async def test_max_length_drop_head_drops_oldest(client: httpx.AsyncClient) -> None:
    """With overflow=drop_head the oldest pending message makes room."""
    await _queue(client, "work", max_length=2, overflow="drop_head")
    for i in range(4):
        await _publish(client, "work", i)
    assert [m["content"] for m in await _consume(client, "work", max=10)] == [2, 3]


async def test_max_bytes_rejects_publish(client: httpx.AsyncClient) -> None:
    """max_bytes counts the content bytes of pending messages."""
    await _queue(client, "work", max_bytes=10)
    await _publish(client, "work", "12345678")
    response = await client.post("/queues/work/messages", json={"content": "12345678"})
    assert response.status_code == 409


async def test_fanout_publishes_to_every_queue(client: httpx.AsyncClient) -> None:
    """POST /publish puts one message in each named queue."""
    await _queue(client, "a")
    await _queue(client, "b")
    response = await client.post("/publish", json={"queues": ["a", "b"], "content": {"x": 1}})
    assert response.status_code == 201, response.text
    assert [m["queue"] for m in response.json()["messages"]] == ["a", "b"]
    for name in ("a", "b"):
        [message] = await _consume(client, name)
        assert message["content"] == {"x": 1}


async def test_fanout_is_all_or_nothing(client: httpx.AsyncClient) -> None:
    """A fan-out with one full queue publishes to none."""
    await _queue(client, "a")
    await _queue(client, "b", max_length=1)
    await _publish(client, "b", "fill")
    response = await client.post("/publish", json={"queues": ["a", "b"], "content": 1})
    assert response.status_code == 409
    assert (await client.get("/queues/a")).json()["pending"] == 0


async def test_touch_extends_the_lease(client: httpx.AsyncClient) -> None:
    """A touched lease outlives its original length."""
    await _queue(client, "work")
    await _publish(client, "work", "slow job")
    [message] = await _consume(client, "work", lease=0.3)
    response = await client.post(f"/messages/{message['message_id']}/touch", json={"lease": 5})
    assert response.status_code == 200, response.text
    await asyncio.sleep(0.5)
    assert await _consume(client, "work") == []
    assert (await client.post(f"/messages/{message['message_id']}/ack")).status_code == 200


async def test_patch_changes_options_live(client: httpx.AsyncClient) -> None:
    """A PATCH applies to the next publish."""
    await _queue(client, "work")
    await _publish(client, "work", 1)
    assert (await client.patch("/queues/work", json={"max_length": 1})).status_code == 200
    response = await client.post("/queues/work/messages", json={"content": 2})
    assert response.status_code == 409


async def test_options_survive_restart(client: httpx.AsyncClient, server: BrokerServer) -> None:
    """Queue options and delayed messages are persisted."""
    from tests.conftest import login

    await _queue(client, "dead")
    await _queue(client, "work", max_attempts=3, dead_letter_queue="dead", overflow="drop_head",
                 max_length=10)  # fmt: skip
    await _publish(client, "work", "later", delay_ms=3000)
    await server.restart()
    import httpx as httpx_module

    token = (await login(server.url))["access_token"]
    async with httpx_module.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as fresh:
        info = (await fresh.get("/queues/work")).json()
        assert (info["max_attempts"], info["dead_letter_queue"], info["overflow"]) == (
            3,
            "dead",
            "drop_head",
        )
        assert info["delayed"] == 1
        [message] = await _consume(fresh, "work", wait=10)
        assert message["content"] == "later"


async def test_dedup_window_survives_restart(
    client: httpx.AsyncClient, server: BrokerServer
) -> None:
    """A dedup_id seen before a restart is still recognised after it."""
    import httpx as httpx_module

    from tests.conftest import login

    await _queue(client, "work")
    first = await _publish(client, "work", "once", dedup_id="order-9")
    await server.restart()
    token = (await login(server.url))["access_token"]
    async with httpx_module.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as fresh:
        again = await _publish(fresh, "work", "twice", dedup_id="order-9")
        assert again["message_id"] == first["message_id"]
        assert again["duplicate"] is True
        assert (await fresh.get("/queues/work")).json()["pending"] == 1


async def test_absurd_ttl_and_delay_are_refused(client: httpx.AsyncClient) -> None:
    """A ttl_ms or delay_ms past 2^32-1 ms (as RabbitMQ caps them) answers 422."""
    await _queue(client, "work")
    for field in ("ttl_ms", "delay_ms"):
        response = await client.post("/queues/work/messages", json={"content": 1, field: 2**40})
        assert response.status_code == 422, field
    response = await client.post("/queues", json={"name": "w2", "message_ttl_ms": 2**40})
    assert response.status_code == 422

"""Webhook push end to end: a real broker posts to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from loguru import logger

from tests.conftest import MS
from tests.transports.webhooks.receiver import Receiver, Reply

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from tests.conftest import BrokerServer


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allowed_hosts": ("127.0.0.1",)}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    endpoint = Receiver()
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


async def make_queue(client: httpx.AsyncClient, name: str = "jobs", **options: Any) -> None:
    response = await client.post("/queues", json={"name": name, **options})
    assert response.status_code == 201, response.text


async def publish(client: httpx.AsyncClient, content: Any, queue: str = "jobs") -> int:
    response = await client.post(f"/queues/{queue}/messages", json={"content": content})
    assert response.status_code == 201, response.text
    return int(response.json()["message_id"])


async def create_webhook(
    client: httpx.AsyncClient, receiver: Receiver, queue: str = "jobs", **fields: Any
) -> dict[str, Any]:
    response = await client.post(f"/queues/{queue}/webhooks", json={"url": receiver.url, **fields})
    assert response.status_code == 201, response.text
    hook: dict[str, Any] = response.json()
    receiver.use_secret(hook["secret"])
    return hook


async def until(check: Any, timeout_ms: float = 10_000) -> None:
    deadline = time.monotonic() + timeout_ms * MS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(10 * MS)


async def queue_info(client: httpx.AsyncClient, name: str = "jobs") -> dict[str, Any]:
    response = await client.get(f"/queues/{name}")
    info: dict[str, Any] = response.json()
    return info


async def test_every_message_posted_once_signed(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await make_queue(client)
    hook = await create_webhook(client, receiver, concurrency=4, headers={"x-team": "blue"})
    assert hook["secret"].startswith("whsec_")
    assert hook["state"] == "active"
    ids = [await publish(client, {"n": n}) for n in range(40)]
    await until(lambda: len(receiver.received) >= 40)
    await asyncio.sleep(200 * MS)
    assert len(receiver.received) == 40
    assert all(r.signed for r in receiver.received)
    bodies = [r.json for r in receiver.received]
    assert sorted(b["message_id"] for b in bodies) == ids
    first = next(b for b in bodies if b["message_id"] == ids[0])
    assert first["content"] == {"n": 0}
    assert first["queue"] == "jobs"
    assert first["attempt"] == 1
    assert first["redelivered"] is False
    assert "created_at" in first
    assert receiver.received[0].headers["webhook-id"].startswith("msg_")
    assert receiver.received[0].headers["x-team"] == "blue"
    # Keep-alive: far fewer connections than requests.
    assert receiver.connections <= 4
    info = await queue_info(client)
    for _ in range(100):
        info = await queue_info(client)
        if info["processing"] == 0:
            break
        await asyncio.sleep(20 * MS)
    assert (info["pending"], info["processing"], info["acked_total"]) == (0, 0, 40)
    listed = (await client.get("/queues/jobs/webhooks")).json()
    assert len(listed) == 1
    assert listed[0]["secret"] is None
    assert listed[0]["deliveries"] == 40
    assert listed[0]["failures"] == 0
    consumers = (await client.get("/consumers")).json()
    assert any(c["label"].startswith(f"webhook {hook['id']}") for c in consumers)
    [counted] = (await client.get("/stats")).json()["broker_specific"]["webhooks"]
    assert (counted["id"], counted["deliveries"], counted["state"]) == (hook["id"], 40, "active")
    assert counted["latency_avg_ms"] > 0
    metrics = (await client.get("/metrics")).text
    labels = f'{{queue="jobs",webhook="{hook["id"]}"}}'
    assert f"broker_webhook_deliveries_total{labels} 40" in metrics
    assert f"broker_webhook_latency_seconds_count{labels} 40" in metrics
    assert "secret" not in (await client.get("/queues/jobs/webhooks")).text.replace(
        '"secret":null', ""
    )


async def test_concurrency_never_exceeded(client: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.answer = lambda request: Reply(delay_s=30 * MS)
    await make_queue(client)
    await create_webhook(client, receiver, concurrency=3)
    for n in range(30):
        await publish(client, n)
    await until(lambda: len(receiver.received) >= 30)
    assert receiver.max_in_flight == 3


async def test_500_and_timeouts_back_off_then_dead_letter(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await make_queue(client, "dead")
    await make_queue(
        client,
        max_attempts=3,
        dead_letter_queue="dead",
        retry={"backoff": "fixed", "min_ms": 300, "jitter": 0.0},
    )
    replies = iter([Reply(status=500), Reply(delay_s=1.0), Reply(status=502)])
    receiver.answer = lambda request: next(replies)
    await create_webhook(client, receiver, timeout_ms=200)
    await publish(client, "x")
    await until(lambda: len(receiver.received) >= 3)
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    # Each retry waited its back-off (300 ms) after the failure; the timeout added 200 ms.
    assert gaps[0] >= 0.29
    assert gaps[1] >= 0.49
    attempts = [r.json["attempt"] for r in receiver.received]
    assert attempts == [1, 2, 3]
    assert [r.json["redelivered"] for r in receiver.received] == [False, True, True]

    async def dead_lettered() -> bool:
        return bool((await queue_info(client, "dead"))["pending"] == 1)

    deadline = time.monotonic() + 10_000 * MS
    while not await dead_lettered():
        assert time.monotonic() < deadline
        await asyncio.sleep(20 * MS)
    await asyncio.sleep(500 * MS)
    assert len(receiver.received) == 3
    [listed] = (await client.get("/queues/jobs/webhooks")).json()
    assert listed["failures"] == 3
    assert listed["last_error"] == "HTTP 502"
    errors = [a["error"] for a in listed["recent"]]
    assert errors[0] == "HTTP 500"
    assert errors[1].startswith("timed out")


async def test_410_disables_until_resumed(client: httpx.AsyncClient, receiver: Receiver) -> None:
    logs: list[str] = []
    sink = logger.add(lambda m: logs.append(f"{m}{m.record['extra']}"), level="DEBUG")
    receiver.answer = lambda request: Reply(status=410)
    await make_queue(client)
    hook = await create_webhook(client, receiver)
    await publish(client, "a")
    await until(lambda: len(receiver.received) >= 1)
    listed: list[dict[str, Any]] = []

    async def state() -> str:
        nonlocal listed
        listed = (await client.get("/queues/jobs/webhooks")).json()
        return str(listed[0]["state"])

    deadline = time.monotonic() + 5000 * MS
    while await state() != "disabled":
        assert time.monotonic() < deadline
        await asyncio.sleep(20 * MS)
    assert "410" in listed[0]["last_error"]
    await asyncio.sleep(300 * MS)
    assert len(receiver.received) == 1
    info = await queue_info(client)
    assert info["pending"] == 1  # given back, not failed
    logger.remove(sink)
    assert any("webhook disabled" in text for text in logs)  # the log is there, and
    assert not any(hook["secret"] in text for text in logs)  # never holds the secret
    receiver.answer = None
    response = await client.patch(f"/queues/jobs/webhooks/{hook['id']}", json={"paused": False})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "active"
    await until(lambda: len(receiver.received) >= 2)


async def test_429_retry_after_delays(client: httpx.AsyncClient, receiver: Receiver) -> None:
    replies = iter([Reply(status=429, headers={"retry-after": "1"}), Reply()])
    receiver.answer = lambda request: next(replies)
    await make_queue(client)
    await create_webhook(client, receiver)
    await publish(client, "a")
    await until(lambda: len(receiver.received) >= 2)
    assert receiver.received[1].at - receiver.received[0].at >= 0.95


async def test_pause_resume_and_delete(client: httpx.AsyncClient, receiver: Receiver) -> None:
    await make_queue(client)
    hook = await create_webhook(client, receiver)
    response = await client.patch(f"/queues/jobs/webhooks/{hook['id']}", json={"paused": True})
    assert response.json()["state"] == "paused"
    await publish(client, "a")
    await asyncio.sleep(300 * MS)
    assert receiver.received == []
    await client.patch(f"/queues/jobs/webhooks/{hook['id']}", json={"paused": False})
    await until(lambda: len(receiver.received) == 1)
    response = await client.delete(f"/queues/jobs/webhooks/{hook['id']}")
    assert response.status_code == 204
    assert (await client.get("/queues/jobs/webhooks")).json() == []
    response = await client.delete(f"/queues/jobs/webhooks/{hook['id']}")
    assert response.status_code == 404


async def test_restart_resumes(
    server: BrokerServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await make_queue(client)
    hook = await create_webhook(client, receiver, secret="whsec_" + "A" * 44)
    await client.patch(f"/queues/jobs/webhooks/{hook['id']}", json={"paused": True})
    await client.patch(f"/queues/jobs/webhooks/{hook['id']}", json={"paused": False})
    receiver.answer = lambda request: Reply(delay_s=5.0)
    for n in range(3):
        await publish(client, n)
    await until(lambda: len(receiver.received) >= 1)
    await server.restart()
    receiver.answer = None
    await until(lambda: {r.json["message_id"] for r in receiver.received} >= set(range(1, 4)))
    assert all(r.signed for r in receiver.received)


async def test_disallowed_host_refused_at_creation(client: httpx.AsyncClient) -> None:
    await make_queue(client)
    response = await client.post("/queues/jobs/webhooks", json={"url": "http://10.0.0.7/hook"})
    assert response.status_code == 422
    assert "$.url" in response.json()["detail"]
    response = await client.post("/queues/jobs/webhooks", json={"url": "ftp://127.0.0.1/x"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://127.0.0.1:1/x", "concurrency": 0}, "concurrency"),
        ({"url": "http://127.0.0.1:1/x", "timeout_ms": -1}, "timeout_ms"),
        ({"url": "http://127.0.0.1:1/x", "secret": "nope"}, "secret"),
        ({"url": "http://127.0.0.1:1/x", "secret": "whsec_AAAA"}, "secret"),
        ({"url": "http://127.0.0.1:1/x", "headers": {"webhook-id": "x"}}, "headers"),
        ({"url": 5}, "url"),
        ({}, "url"),
    ],
)
async def test_bad_input_names_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    await make_queue(client)
    response = await client.post("/queues/jobs/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_unknown_field_and_missing_queue(client: httpx.AsyncClient) -> None:
    await make_queue(client)
    response = await client.post(
        "/queues/jobs/webhooks", json={"url": "http://127.0.0.1:1/x", "retries": 3}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_field"
    response = await client.post("/queues/nope/webhooks", json={"url": "http://127.0.0.1:1/x"})
    assert response.status_code == 404
    response = await client.patch("/queues/jobs/webhooks/wh_x", json={"paused": "yes"})
    assert response.status_code == 422


async def test_deleting_the_queue_deletes_its_webhooks(
    server: BrokerServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await make_queue(client)
    await create_webhook(client, receiver)
    assert (await client.delete("/queues/jobs")).status_code == 204
    await until(lambda: not server.ctx.webhooks.records)
    assert await server.ctx.storage.webhooks.list_webhooks() == []
    await make_queue(client)
    assert (await client.get("/queues/jobs/webhooks")).json() == []


async def test_a_host_no_longer_allowed_is_refused_at_delivery(
    server: BrokerServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """An operator narrows the list and restarts: the existing webhook posts nothing more."""
    import msgspec

    await make_queue(client, max_attempts=1)
    await create_webhook(client, receiver)
    server.settings = msgspec.structs.replace(server.settings, webhook_allowed_hosts=("x.test",))
    await server.restart()
    await publish(client, "a")
    listed: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10_000 * MS
    while not listed or listed[0]["failures"] < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(20 * MS)
        listed = (await client.get("/queues/jobs/webhooks")).json()
    assert "BROKER_WEBHOOK_ALLOWED_HOSTS" in listed[0]["last_error"]
    assert receiver.received == []


async def test_a_json_answer_becomes_the_result(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """A 2xx JSON body is the message's result (waiters get it); another body is a plain ack."""
    receiver.answer = lambda request: (
        Reply(body=b'{"total": %d}' % request.json["content"]["n"])
        if request.json["content"]["n"]
        else Reply(body=b"ok, not JSON")
    )
    await make_queue(client)
    await create_webhook(client, receiver)
    answered = await publish(client, {"n": 7})
    plain = await publish(client, {"n": 0})
    waited = await client.get(f"/messages/{answered}/result", params={"wait": 10})
    assert waited.status_code == 200, waited.text
    assert (waited.json()["status"], waited.json()["result"]) == ("processed", {"total": 7})
    other = await client.get(f"/messages/{plain}/result", params={"wait": 10})
    assert other.status_code == 200, other.text
    assert (other.json()["status"], other.json()["result"]) == ("processed", None)

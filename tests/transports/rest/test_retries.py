"""Retries over REST: back-off policy, nack with delay, cancel, reschedule, pause and resume.

Timing checks are lower bounds only (a message must not come back before
its back-off), with generous upper limits for slow machines.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import MS

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer

EXPONENTIAL = {"backoff": "exponential", "min_ms": 200, "max_ms": 5000, "jitter": 0.0}


async def make_queue(
    client: httpx.AsyncClient, name: str = "jobs", **options: Any
) -> dict[str, Any]:
    response = await client.post("/queues", json={"name": name, **options})
    assert response.status_code == 201, response.text
    info: dict[str, Any] = response.json()
    return info


async def publish(
    client: httpx.AsyncClient, content: Any, queue: str = "jobs", **fields: Any
) -> int:
    response = await client.post(f"/queues/{queue}/messages", json={"content": content, **fields})
    assert response.status_code == 201, response.text
    return int(response.json()["message_id"])


async def consume(
    client: httpx.AsyncClient, queue: str = "jobs", wait: float = 0.0, count: int = 1
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/queues/{queue}/messages/consume", params={"wait": wait, "max": count}
    )
    assert response.status_code in (200, 204), response.text
    if response.status_code == 204:
        return []
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


async def next_delivery(client: httpx.AsyncClient, queue: str = "jobs") -> dict[str, Any]:
    """Long-poll until one message comes (at most ~10 s)."""
    deadline = time.monotonic() + 10_000 * MS
    while time.monotonic() < deadline:
        messages = await consume(client, queue, wait=1.0)
        if messages:
            return messages[0]
    raise AssertionError("no delivery")


async def get_message(client: httpx.AsyncClient, id: int, queue: str = "jobs") -> dict[str, Any]:
    response = await client.get(f"/queues/{queue}/messages/{id}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


async def test_backoff_gaps_grow_then_dead_letter(client: httpx.AsyncClient) -> None:
    """Each nack waits longer (200, 400, 800 ms); the last attempt goes to the dead-letter queue."""
    await make_queue(client, "dlq")
    info = await make_queue(client, retry=EXPONENTIAL, max_attempts=4, dead_letter_queue="dlq")
    assert info["retry"]["min_ms"] == 200
    id = await publish(client, "job")
    times: list[float] = []
    for _ in range(4):
        message = await next_delivery(client)
        times.append(time.monotonic())
        assert message["message_id"] == id
        response = await client.post(f"/messages/{id}/nack")
        assert response.status_code == 200, response.text
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, expected in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert gap >= expected * 0.95, gaps
    assert gaps[2] > gaps[0], gaps
    dead = await get_message(client, id, "dlq")
    assert (dead["status"], dead["dead_lettered_from"]) == ("pending", "jobs")
    assert dead["last_error"] == "max_attempts"


async def test_other_messages_flow_during_backoff(client: httpx.AsyncClient) -> None:
    """A message in back-off is pending with deliver_at and `retry_backoff`; the next one goes."""
    await make_queue(client, retry={"min_ms": 60_000, "jitter": 0.0})
    first = await publish(client, "first")
    second = await publish(client, "second")
    assert (await next_delivery(client))["message_id"] == first
    assert (await client.post(f"/messages/{first}/nack")).status_code == 200
    assert (await next_delivery(client))["message_id"] == second
    view = await get_message(client, first)
    assert (view["status"], view["waiting"], view["attempt"]) == ("pending", "retry_backoff", 1)
    due = datetime.fromisoformat(view["deliver_at"])
    assert timedelta(seconds=50) < due - datetime.now(UTC) <= timedelta(seconds=61)
    info = (await client.get("/queues/jobs")).json()
    assert (info["delayed"], info["processing"]) == (1, 1)


async def test_nack_delay_overrides_policy(client: httpx.AsyncClient) -> None:
    """`delay_ms` on a nack wins over the queue's back-off, on the single and the batch route."""
    await make_queue(client, retry={"min_ms": 60_000})
    id = await publish(client, "x")
    await next_delivery(client)
    started = time.monotonic()
    response = await client.post(f"/messages/{id}/nack", params={"delay_ms": 300})
    assert response.status_code == 200, response.text
    assert await consume(client) == []
    again = await next_delivery(client)
    assert time.monotonic() - started >= 0.29
    assert (again["message_id"], again["redelivered"]) == (id, True)
    response = await client.post("/messages/nack", json={"ids": [id], "delay_ms": 0})
    assert response.json()["settled"] == [id]
    assert (await next_delivery(client))["attempt"] == 3


async def test_nack_without_policy_requeues_at_once(client: httpx.AsyncClient) -> None:
    """No retry policy: a nacked message is deliverable again at once (as before)."""
    await make_queue(client)
    id = await publish(client, "x")
    await next_delivery(client)
    await client.post(f"/messages/{id}/nack")
    assert [m["message_id"] for m in await consume(client)] == [id]


async def test_expired_lease_backs_off_when_policy_says_so(client: httpx.AsyncClient) -> None:
    """With `on: ["expired"]`, a lease that ran out waits its back-off too."""
    await make_queue(client, lease=0.2, retry={"min_ms": 500, "jitter": 0.0, "on": ["expired"]})
    id = await publish(client, "x")
    await next_delivery(client)
    leased = time.monotonic()
    again = await next_delivery(client)
    assert again["message_id"] == id
    assert time.monotonic() - leased >= 0.2 + 0.5 - 0.02


async def test_cancel_pending_delayed_and_refusals(client: httpx.AsyncClient) -> None:
    """DELETE cancels a pending or delayed message (204); processing is 409, unknown 404."""
    await make_queue(client)
    delayed = await publish(client, "later", delay_ms=60_000)
    ready = await publish(client, "now")
    held = await publish(client, "held")
    assert (await client.delete(f"/queues/jobs/messages/{delayed}")).status_code == 204
    assert (await client.delete(f"/queues/jobs/messages/{ready}")).status_code == 204
    # Ended, kept for its history (issue 25): readable, counted nowhere.
    gone = await client.get(f"/queues/jobs/messages/{delayed}")
    assert (gone.json()["status"], gone.json()["last_error"]) == ("ended", "cancelled")
    assert (await next_delivery(client))["message_id"] == held
    response = await client.delete(f"/queues/jobs/messages/{held}")
    assert response.status_code == 409, response.text
    assert (await client.delete("/queues/jobs/messages/999999")).status_code == 404
    # Cancelled already: it ended (409, as for a processed one).
    assert (await client.delete(f"/queues/jobs/messages/{delayed}")).status_code == 409
    info = (await client.get("/queues/jobs")).json()
    assert (info["pending"], info["delayed"], info["processing"]) == (0, 0, 1)


async def test_reschedule_moves_a_message_in_time_and_priority(client: httpx.AsyncClient) -> None:
    """PATCH makes a delayed message due now, or delays a ready one, and changes priority."""
    await make_queue(client)
    later = await publish(client, "later", delay_ms=60_000)
    low = await publish(client, "low")
    response = await client.patch(f"/queues/jobs/messages/{later}", json={"delay_ms": 0})
    assert response.status_code == 200, response.text
    # Due now; no consumer is connected, and `waiting` says so.
    assert response.json()["waiting"] == "no_consumer"
    at = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    response = await client.patch(f"/queues/jobs/messages/{low}", json={"deliver_at": at})
    assert (response.json()["waiting"], response.json()["status"]) == ("delayed", "pending")
    response = await client.patch(
        f"/queues/jobs/messages/{low}", json={"delay_ms": 0, "priority": 9}
    )
    assert response.json()["priority"] == 9
    assert [m["message_id"] for m in await consume(client, count=2)] == [low, later]


async def test_reschedule_refusals(client: httpx.AsyncClient) -> None:
    """Both deliver_at and delay_ms, nothing, past the cap, processing: 422 or 409."""
    await make_queue(client)
    id = await publish(client, "x")
    url = f"/queues/jobs/messages/{id}"
    both = {"delay_ms": 1, "deliver_at": datetime.now(UTC).isoformat()}
    for body, field in (
        (both, "delay_ms"),
        ({}, "deliver_at"),
        ({"delay_ms": 2**32}, "delay_ms"),
        ({"deliver_at": "2999-01-01T00:00:00Z"}, "deliver_at"),
        ({"priority": 10}, "priority"),
        ({"later": 1}, "later"),
    ):
        response = await client.patch(url, json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.text, (body, response.text)
    await next_delivery(client)
    assert (await client.patch(url, json={"delay_ms": 5})).status_code == 409


async def test_pause_holds_deliveries_and_resume_releases(client: httpx.AsyncClient) -> None:
    """Paused: publishes are accepted, nothing is delivered, a lease runs on; resume delivers."""
    await make_queue(client)
    held = await publish(client, "held")
    await next_delivery(client)
    response = await client.post("/queues/jobs/pause")
    assert response.status_code == 200, response.text
    assert (response.json()["paused"], response.json()["paused_until"]) == (True, None)
    waiting = await publish(client, "waiting")
    assert await consume(client, wait=0.3) == []
    assert (await client.post(f"/messages/{held}/ack")).status_code == 200
    info = (await client.get("/queues/jobs")).json()
    assert (info["paused"], info["pending"]) == (True, 1)
    response = await client.post("/queues/jobs/resume")
    assert response.json()["paused"] is False
    assert (await next_delivery(client))["message_id"] == waiting


async def test_pause_until_resumes_by_itself(client: httpx.AsyncClient) -> None:
    """A pause until an instant ends then without a resume."""
    await make_queue(client)
    id = await publish(client, "x")
    until = datetime.now(UTC) + timedelta(milliseconds=600)
    response = await client.post("/queues/jobs/pause", json={"until": until.isoformat()})
    assert response.status_code == 200, response.text
    assert response.json()["paused_until"] is not None
    assert await consume(client) == []
    message = await next_delivery(client)
    assert message["message_id"] == id
    assert datetime.now(UTC) >= until - timedelta(milliseconds=20)
    info = (await client.get("/queues/jobs")).json()
    assert (info["paused"], info["paused_until"]) == (False, None)


async def test_pause_refusals(client: httpx.AsyncClient) -> None:
    """Pausing until the past or past the cap is 422 naming `until`; an unknown queue 404."""
    await make_queue(client)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    for until in (past, "2999-01-01T00:00:00Z"):
        response = await client.post("/queues/jobs/pause", json={"until": until})
        assert response.status_code == 422, response.text
        assert "until" in response.text
        response = await client.patch("/queues/jobs", json={"paused": True, "paused_until": until})
        assert response.status_code == 422, response.text
        assert "until" in response.text
    assert (await client.post("/queues/nope/pause")).status_code == 404


@pytest.mark.parametrize(
    ("retry", "field"),
    [
        ({"backoff": "random"}, "backoff"),
        ({"min_ms": -1}, "min_ms"),
        ({"min_ms": 5000, "max_ms": 1000}, "max_ms"),
        ({"max_ms": 2**32}, "max_ms"),
        ({"jitter": 1.5}, "jitter"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"on": ["crash"]}, "on"),
        ({"tries": 3}, "tries"),
    ],
)
async def test_bad_retry_policy_is_422_naming_the_field(
    client: httpx.AsyncClient, retry: dict[str, Any], field: str
) -> None:
    """A bad retry policy is refused at creation and in PATCH, naming the field."""
    response = await client.post("/queues", json={"name": "jobs", "retry": retry})
    assert response.status_code == 422, response.text
    assert field in response.text, response.text
    await make_queue(client)
    response = await client.patch("/queues/jobs", json={"retry": retry})
    assert response.status_code == 422, response.text
    assert field in response.text, response.text


async def test_bad_nack_delay_is_422(client: httpx.AsyncClient) -> None:
    """A negative or too long nack delay is refused before anything is settled."""
    await make_queue(client)
    id = await publish(client, "x")
    await next_delivery(client)
    for delay in (-1, 2**32):
        response = await client.post(f"/messages/{id}/nack", params={"delay_ms": delay})
        assert response.status_code == 422, response.text
        response = await client.post("/messages/nack", json={"ids": [id], "delay_ms": delay})
        assert response.status_code == 422, response.text
        assert "delay_ms" in response.text
    info = (await client.get("/queues/jobs")).json()
    assert info["processing"] == 1


async def test_patch_sets_and_clears_the_policy(client: httpx.AsyncClient) -> None:
    """PATCH sets a policy (defaults filled in) and null clears it."""
    await make_queue(client)
    response = await client.patch("/queues/jobs", json={"retry": {"backoff": "linear"}})
    assert response.json()["retry"] == {
        "backoff": "linear",
        "min_ms": 1000,
        "max_ms": 600000,
        "multiplier": 2.0,
        "jitter": 0.1,
        "on": ["nack", "expired"],
    }
    response = await client.patch("/queues/jobs", json={"retry": None})
    assert response.json()["retry"] is None


async def test_restart_keeps_policy_backoff_and_pause(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """After a restart the policy, a message in back-off (with its due time) and a pause hold."""
    await make_queue(client, retry={"min_ms": 1500, "jitter": 0.0})
    await make_queue(client, "other")
    id = await publish(client, "x")
    await next_delivery(client)
    await client.post(f"/messages/{id}/nack")
    before = await get_message(client, id)
    await publish(client, "y", queue="other")
    await client.post("/queues/other/pause")
    await server.restart()
    info = (await client.get("/queues/jobs")).json()
    assert info["retry"]["min_ms"] == 1500
    assert info["delayed"] == 1
    after = await get_message(client, id)
    assert (after["waiting"], after["deliver_at"]) == ("retry_backoff", before["deliver_at"])
    assert await consume(client) == []
    again = await next_delivery(client)
    assert (again["message_id"], again["attempt"]) == (id, 2)
    other = (await client.get("/queues/other")).json()
    assert (other["paused"], other["pending"]) == (True, 1)
    assert await consume(client, "other", wait=0.2) == []


async def test_many_in_backoff_do_not_hold_ready_messages(client: httpx.AsyncClient) -> None:
    """With 500 messages backing off, a fresh publish is delivered at once."""
    await make_queue(client, retry={"min_ms": 60_000, "jitter": 0.5})
    batch = [{"content": i} for i in range(500)]
    response = await client.post("/queues/jobs/messages/batch", json={"messages": batch})
    assert response.status_code == 201
    ids = [m["message_id"] for m in await consume(client, count=500)]
    assert len(ids) == 500
    response = await client.post("/messages/nack", json={"ids": ids})
    assert len(response.json()["settled"]) == 500
    fresh = await publish(client, "fresh")
    assert [m["message_id"] for m in await consume(client, count=10)] == [fresh]
    await asyncio.sleep(0)

"""Retries over GraphQL: the retry option, nack(delayMs), cancel, reschedule, pause, resume."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.transports.graphql.test_http import data_of, error_of, publish

if TYPE_CHECKING:
    import httpx

CREATE = """
mutation($name: String!, $options: QueueOptionsInput) {
  createQueue(name: $name, options: $options) {
    name paused pausedUntil retry { backoff minMs maxMs multiplier jitter on }
  }
}
"""
NACK = """
mutation($id: Long!, $delay: Long) { nack(messageId: $id, delayMs: $delay) { status } }
"""


async def consume(client: httpx.AsyncClient, wait: float = 0.0) -> list[int]:
    response = await client.get("/queues/jobs/messages/consume", params={"wait": wait})
    if response.status_code == 204:
        return []
    return [m["message_id"] for m in response.json()["messages"]]


async def test_create_queue_with_a_retry_policy(client: httpx.AsyncClient) -> None:
    """`retry` is an input of createQueue and a field of Queue, defaults filled in."""
    options = {"retry": {"backoff": "linear", "minMs": 250}}
    data = await data_of(client, CREATE, name="jobs", options=options)
    assert data["createQueue"]["retry"] == {
        "backoff": "linear",
        "minMs": 250,
        "maxMs": 600000,
        "multiplier": 2.0,
        "jitter": 0.1,
        "on": ["nack", "expired"],
    }
    assert (data["createQueue"]["paused"], data["createQueue"]["pausedUntil"]) == (False, None)
    update = """
    mutation { updateQueue(name: "jobs", options: {retry: null}) { retry { minMs } } }
    """
    assert (await data_of(client, update))["updateQueue"]["retry"] is None


async def test_bad_retry_policy_names_the_field(client: httpx.AsyncClient) -> None:
    """An inverted range is an error naming maxMs."""
    options = {"retry": {"minMs": 5000, "maxMs": 100}}
    error = await error_of(client, CREATE, name="jobs", options=options)
    assert "max_ms" in error["message"] or "maxMs" in error["message"], error


async def test_nack_with_delay_holds_the_message(client: httpx.AsyncClient) -> None:
    """nack(delayMs) requeues with a wait: not consumable at once, then again."""
    await data_of(client, CREATE, name="jobs")
    id = await publish(client, "x")
    assert await consume(client) == [id]
    data = await data_of(client, NACK, id=id, delay=300)
    assert data["nack"]["status"] == "pending"
    assert await consume(client) == []
    assert await consume(client, wait=3.0) == [id]


async def test_pause_resume_cancel_and_reschedule(client: httpx.AsyncClient) -> None:
    """pauseQueue holds deliveries, resumeQueue releases; rescheduleMessage and cancelMessage."""
    await data_of(client, CREATE, name="jobs")
    paused = await data_of(client, 'mutation { pauseQueue(name: "jobs") { paused } }')
    assert paused["pauseQueue"]["paused"] is True
    keep = await publish(client, "keep")
    drop = await publish(client, "drop")
    assert await consume(client, wait=0.2) == []
    cancel = 'mutation($id: Long!) { cancelMessage(queue: "jobs", messageId: $id) }'
    assert (await data_of(client, cancel, id=drop))["cancelMessage"] is True
    error = await error_of(client, cancel, id=drop)
    assert "not" in error["message"].lower(), error
    reschedule = """
    mutation($id: Long!) {
      rescheduleMessage(queue: "jobs", messageId: $id, delayMs: 60000, priority: 5) {
        priority waiting deliverAt
      }
    }
    """
    view = (await data_of(client, reschedule, id=keep))["rescheduleMessage"]
    assert (view["priority"], view["waiting"]) == (5, "delayed")
    resumed = await data_of(client, 'mutation { resumeQueue(name: "jobs") { paused } }')
    assert resumed["resumeQueue"]["paused"] is False
    assert await consume(client) == []
    now = """
    mutation($id: Long!) {
      rescheduleMessage(queue: "jobs", messageId: $id, delayMs: 0) { waiting }
    }
    """
    # Due now; no consumer is connected, and `waiting` says so.
    assert (await data_of(client, now, id=keep))["rescheduleMessage"]["waiting"] == "no_consumer"
    assert await consume(client) == [keep]


async def test_backoff_gaps_grow_between_graphql_nacks(client: httpx.AsyncClient) -> None:
    """Nacked through GraphQL under a linear policy of 200 ms: 200 then 400 ms at least."""
    import time

    options = {"retry": {"backoff": "linear", "minMs": 200, "maxMs": 2000, "jitter": 0.0}}
    await data_of(client, CREATE, name="jobs", options=options)
    id = await publish(client, "x")
    times = []
    for _ in range(3):
        got: list[int] = []
        while not got:
            got = await consume(client, wait=1.0)
        times.append(time.monotonic())
        assert got == [id]
        await data_of(client, NACK, id=id, delay=None)
    assert times[1] - times[0] >= 0.195
    assert times[2] - times[1] >= 0.395

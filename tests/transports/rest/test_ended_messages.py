"""Issue 25: a cancelled, expired or dropped message's history stays readable.

Such a message (with no dead-letter queue) keeps a body-less row, status
``ended`` with the reason in ``last_error``, for the processed retention:
``GET /messages/{id}/history`` ends with its last event, ``GET
/queues/{q}/messages/{id}`` says how it ended, and it counts nowhere (queue
counts, browse of any status), before and after a restart, until pruned.
On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.storage.pg_database import temporary_database
from tests.transports.graphql.test_http import data_of
from tests.transports.graphql.test_results_history import MESSAGE
from tests.transports.rest.test_history_facts import start_again
from tests.transports.rest.test_results_history import events_of, make_queue, publish

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

    from tests.conftest import BrokerServer

STATUSES = ("pending", "processing", "processed", "failed")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings_overrides(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The server of each test on SQLite, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
    else:
        with temporary_database() as url:
            yield {"storage_url": url}


async def ended_history(client: httpx.AsyncClient, id: int) -> list[dict[str, Any]]:
    """The history of message ``id`` once its last event is an end (bounded wait: a TTL)."""
    deadline = time.monotonic() + 30
    while True:
        response = await client.get(f"/messages/{id}/history")
        if response.status_code == 200:
            events: list[dict[str, Any]] = response.json()["events"]
            if events and events[-1]["event"] in ("expired", "dropped", "cancelled"):
                return events
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.05)


async def message(client: httpx.AsyncClient, id: int, queue: str = "jobs") -> dict[str, Any]:
    response = await client.get(f"/queues/{queue}/messages/{id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def counted_nowhere(client: httpx.AsyncClient, queue: str, ids: set[int]) -> None:
    """``ids`` are in no count and no browse of ``queue``; its counts are those of ``kept``."""
    listed = await client.get(f"/queues/{queue}/messages")
    assert listed.status_code == 200, listed.text
    assert not ids & {m["message_id"] for m in listed.json()["messages"]}
    for status in STATUSES:
        page = await client.get(f"/queues/{queue}/messages", params={"status": status})
        assert page.status_code == 200, page.text
        assert not ids & {m["message_id"] for m in page.json()["messages"]}, status
    assert (
        await client.get(f"/queues/{queue}/messages", params={"status": "ended"})
    ).status_code == 422


def counts(info: dict[str, Any]) -> tuple[int, ...]:
    return tuple(info[key] for key in (*STATUSES, "delayed"))


async def queue_counts(client: httpx.AsyncClient, queue: str = "jobs") -> tuple[int, ...]:
    response = await client.get(f"/queues/{queue}")
    assert response.status_code == 200, response.text
    return counts(response.json())


async def test_cancelled_expired_and_dropped_keep_their_history_and_count_nowhere(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    await make_queue(client)
    await make_queue(client, "short", message_ttl_ms=50)
    await make_queue(client, "capped", max_length=1, overflow="drop_head")

    cancelled = await publish(client, {"n": 1})
    kept = await publish(client, {"n": 2})
    response = await client.delete(f"/queues/jobs/messages/{cancelled}")
    assert response.status_code == 204, response.text
    expired = await publish(client, {"n": 3}, "short")
    dropped = await publish(client, {"n": 4}, "capped")
    survivor = await publish(client, {"n": 5}, "capped")

    async def check() -> None:
        events = await ended_history(client, cancelled)
        assert [e["event"] for e in events] == ["published", "cancelled"]
        last = {k: v for k, v in events[-1].items() if k not in ("at", "event")}
        assert last == {"reason": "cancelled", "by": "admin"}
        seen = await message(client, cancelled)
        assert (seen["status"], seen["last_error"], seen["content"]) == (
            "ended",
            "cancelled",
            None,
        )
        # Its outcome is known at once (no wait), over REST and GraphQL.
        outcome = await client.get(f"/messages/{cancelled}/result", params={"wait": 30})
        assert outcome.status_code == 200, outcome.text
        assert (outcome.json()["status"], outcome.json()["last_error"]) == ("ended", "cancelled")
        data = await data_of(client, MESSAGE, id=cancelled)
        assert (data["message"]["status"], data["message"]["lastError"]) == ("ended", "cancelled")
        assert [e["event"] for e in data["message"]["history"]] == ["published", "cancelled"]
        events = await ended_history(client, expired)
        assert [e["event"] for e in events] == ["published", "expired"]
        seen = await message(client, expired, "short")
        assert (seen["status"], seen["last_error"]) == ("ended", "expired")
        events = await ended_history(client, dropped)
        assert [e["event"] for e in events] == ["published", "dropped"]
        assert events[-1]["reason"] == "maxlen"
        seen = await message(client, dropped, "capped")
        assert (seen["status"], seen["last_error"]) == ("ended", "maxlen")

        await counted_nowhere(client, "jobs", {cancelled})
        await counted_nowhere(client, "short", {expired})
        await counted_nowhere(client, "capped", {dropped})
        assert await queue_counts(client) == (1, 0, 0, 0, 0)
        assert await queue_counts(client, "short") == (0, 0, 0, 0, 0)
        assert await queue_counts(client, "capped") == (1, 0, 0, 0, 0)
        # The queue's one pending message is the kept one; a purge takes only it.
        listed = (await client.get("/queues/jobs/messages")).json()["messages"]
        assert [m["message_id"] for m in listed] == [kept]
        capped = (await client.get("/queues/capped/messages")).json()["messages"]
        assert [m["message_id"] for m in capped] == [survivor]
        # A retry of an ended message is refused; nothing to redrive.
        retry = await client.post(f"/queues/jobs/messages/{cancelled}/retry")
        assert retry.status_code == 409, retry.text
        redrive = await client.post("/queues/jobs/redrive")
        assert redrive.status_code in (200, 201), redrive.text
        assert redrive.json()["moved"] == 0

    await check()
    await server.stop()
    await start_again(server, client)
    await check()

    # max_length still counts one pending message in "capped": a publish drops the survivor.
    newest = await publish(client, {"n": 6}, "capped")
    events = await ended_history(client, survivor)
    assert events[-1]["event"] == "dropped"
    assert await queue_counts(client, "capped") == (1, 0, 0, 0, 0)
    capped = (await client.get("/queues/capped/messages")).json()["messages"]
    assert [m["message_id"] for m in capped] == [newest]

    purged = await client.post("/queues/jobs/purge")
    assert purged.status_code == 200, purged.text
    assert purged.json()["purged"] == 1
    assert (await message(client, cancelled))["status"] == "ended"

    # Past the processed retention they go, like processed messages.
    await server.ctx.broker.prune(time.time() + 7200, 0)
    for id in (cancelled, expired, dropped, survivor):
        assert (await client.get(f"/messages/{id}/history")).status_code == 404
    assert (await client.get(f"/queues/jobs/messages/{cancelled}")).status_code == 404


async def test_deleting_the_queue_deletes_its_ended_messages(client: httpx.AsyncClient) -> None:
    await make_queue(client)
    id = await publish(client, {"n": 1})
    assert (await client.delete(f"/queues/jobs/messages/{id}")).status_code == 204
    assert [e["event"] for e in await events_of(client, id)][-1] == "cancelled"
    assert (await client.delete("/queues/jobs")).status_code == 204
    assert (await client.get(f"/messages/{id}/history")).status_code == 404

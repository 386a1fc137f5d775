"""What a history says beyond the event names: who published over what, who retried, why.

And its stored form: compact lines, with rows written by an earlier build
(JSON lines) still read, alone or with new lines appended.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from tests.conftest import login, make_user
from tests.transports.graphql.test_http import data_of
from tests.transports.rest.test_results_history import events_of, lease, make_queue, publish
from tests.transports.ws.test_endpoint import open_ws, recv, send
from transports.app import create_app

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer


def db_of(server: BrokerServer) -> sqlite3.Connection:
    return sqlite3.connect(server.settings.data_dir / "broker.db")


async def start_again(server: BrokerServer, client: httpx.AsyncClient) -> None:
    """Start a fresh app on the stopped server's data dir; log ``client`` in again."""
    server.app = create_app(server.settings)
    await server.start()
    client.headers["Authorization"] = f"Bearer {(await login(server.url))['access_token']}"


def published(events: list[dict[str, Any]]) -> dict[str, Any]:
    first = events[0]
    assert first["event"] == "published", events
    return {key: value for key, value in first.items() if key not in ("at", "event")}


async def test_published_says_by_whom_over_what(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    await make_queue(client)
    over_rest = await publish(client, "rest")
    assert published(await events_of(client, over_rest)) == {"transport": "rest", "user": "admin"}

    async with await open_ws(server, admin_token) as ws:
        await send(ws, op="publish", queue="jobs", content="ws", ref="r")
        confirm = await recv(ws)
    assert published(await events_of(client, confirm["message_id"])) == {
        "transport": "ws",
        "user": "admin",
    }

    data = await data_of(client, 'mutation { publish(queue: "jobs", content: 1) { messageId } }')
    over_graphql = int(data["publish"]["messageId"])
    assert published(await events_of(client, over_graphql)) == {
        "transport": "graphql",
        "user": "admin",
    }

    assert (await client.post("/topics", json={"name": "orders"})).status_code == 201
    bound = await client.post("/topics/orders/bindings", json={"queue": "jobs", "pattern": "#"})
    assert bound.status_code == 201, bound.text
    routed = await client.post("/topics/orders/publish", json={"routing_key": "eu", "content": 1})
    assert routed.status_code in (200, 201), routed.text
    over_topic = routed.json()["routed"][0]["message_id"]
    assert published(await events_of(client, over_topic)) == {
        "transport": "rest",
        "user": "admin",
        "topic": "orders",
    }

    token = await make_user(
        client, server, "pub-one", [{"pattern": "jobs", "actions": ["publish", "consume"]}]
    )
    other = await client.post(
        "/queues/jobs/messages",
        json={"content": 2},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert other.status_code == 201, other.text
    assert published(await events_of(client, other.json()["message_id"])) == {
        "transport": "rest",
        "user": "pub-one",
    }


async def test_nack_dead_letter_retry_and_redrive_say_why_and_who(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    await make_queue(client, "dead")
    await make_queue(client, max_attempts=2, dead_letter_queue="dead")
    id = await publish(client, "job")
    assert await lease(client) == id
    nacked = await client.post(
        f"/messages/{id}/nack", params={"reason": "try later, please", "delay_ms": 1}
    )
    assert nacked.status_code == 200, nacked.text
    assert await lease(client) == id
    assert (await client.post(f"/messages/{id}/nack", params={"reason": "no"})).status_code == 200
    ops = await make_user(client, server, "ops", [{"pattern": "*", "actions": ["manage"]}])
    retried = await client.post(
        f"/queues/dead/messages/{id}/retry", headers={"Authorization": f"Bearer {ops}"}
    )
    assert retried.status_code == 200, retried.text
    assert await lease(client) == id
    assert (await client.post(f"/messages/{id}/nack", params={"requeue": False})).status_code == 200
    assert (await client.post("/queues/dead/redrive")).status_code in (200, 201)
    events = await events_of(client, id)
    assert [e["event"] for e in events] == [
        "published",
        "delivered",
        "nacked",
        "delivered",
        "dead_lettered",
        "retried",
        "delivered",
        "dead_lettered",
        "retried",
    ], events
    assert events[2] | {"at": None} == {
        "at": None,
        "event": "nacked",
        "requeue": True,
        "reason": "try later, please",
        "delay_ms": 1,
    }
    assert (events[4]["from"], events[4]["to"]) == ("jobs", "dead")
    assert events[4]["reason"]
    assert (events[5]["to"], events[5]["by"]) == ("jobs", "ops")
    assert events[7]["reason"] == "rejected"
    assert (events[8]["to"], events[8]["by"]) == ("jobs", "admin")


async def test_expired_into_a_dead_letter_queue_says_so(client: httpx.AsyncClient) -> None:
    await make_queue(client, "dead")
    await make_queue(client, dead_letter_queue="dead")
    response = await client.post("/queues/jobs/messages", json={"content": 1, "ttl_ms": 1})
    assert response.status_code == 201, response.text
    id = response.json()["message_id"]
    assert await lease(client, "dead") == id
    events = await events_of(client, id)
    assert [e["event"] for e in events] == ["published", "dead_lettered", "delivered"], events
    assert events[1]["reason"] == "expired"


async def test_a_typical_story_is_stored_in_a_few_bytes(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    await make_queue(client)
    id = await publish(client, "job")
    assert await lease(client) == id
    assert (await client.post(f"/messages/{id}/ack")).status_code == 200
    shown = await events_of(client, id)
    await server.stop()
    db = db_of(server)
    try:
        [(stored,)] = db.execute("SELECT history FROM messages WHERE id = ?", (id,))
    finally:
        db.close()
    assert len(stored.encode()) <= 45, stored
    assert [e["event"] for e in shown] == ["published", "delivered", "acked"]
    await start_again(server, client)
    assert await events_of(client, id) == shown


async def test_a_history_in_the_first_form_still_reads(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Rows written by the previous build hold JSON lines; new lines may follow them."""
    await make_queue(client)
    id = await publish(client, "job")
    await server.stop()
    db = db_of(server)
    try:
        (created,) = db.execute("SELECT created_at FROM messages WHERE id = ?", (id,)).fetchone()
        old = (
            f'[{created!r},"published"]\n'
            f'[{created + 0.066!r},"delivered",{{"attempt":1,"transport":"pull"}}]\n'
            f'[{created + 0.07!r},"nacked",{{"requeue":true,"reason":"x y","delay_ms":5}}]\n'
        )
        db.execute("UPDATE messages SET history = ? WHERE id = ?", (old, id))
        db.commit()
    finally:
        db.close()
    await start_again(server, client)
    events = await events_of(client, id)
    assert [
        (e["event"], {k: v for k, v in e.items() if k not in ("at", "event")}) for e in events
    ] == [
        ("published", {}),
        ("delivered", {"attempt": 1, "transport": "pull"}),
        ("nacked", {"requeue": True, "reason": "x y", "delay_ms": 5}),
    ]
    # Acked by this build: its line follows the old ones, in order.
    assert await lease(client) == id
    assert (await client.post(f"/messages/{id}/ack")).status_code == 200
    events = await events_of(client, id)
    assert [e["event"] for e in events] == [
        "published",
        "delivered",
        "nacked",
        "delivered",
        "acked",
    ]
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


async def test_delayed_and_failed_say_until_and_why(client: httpx.AsyncClient) -> None:
    await make_queue(client)
    response = await client.post("/queues/jobs/messages", json={"content": 1, "delay_ms": 60000})
    assert response.status_code == 201, response.text
    delayed = response.json()["message_id"]
    events = await events_of(client, delayed)
    assert [e["event"] for e in events] == ["published", "delayed"], events
    shown = (await client.get(f"/queues/jobs/messages/{delayed}")).json()
    assert events[1]["until"][:23] == shown["deliver_at"][:23]
    id = await publish(client, "job")
    assert await lease(client) == id
    nacked = await client.post(f"/messages/{id}/nack", params={"requeue": False, "reason": "bad"})
    assert nacked.status_code == 200, nacked.text
    events = await events_of(client, id)
    assert [e["event"] for e in events] == ["published", "delivered", "failed"], events
    assert events[2]["reason"]


async def test_a_scheduled_message_says_which_schedule_published_it(
    client: httpx.AsyncClient,
) -> None:
    from tests.transports.rest.test_schedules import EVERY_MS

    await make_queue(client, "ticks")
    body = {"name": "nightly", "every_ms": EVERY_MS, "content": {"job": "tick"}}
    response = await client.post("/queues/ticks/schedules", json=body)
    assert response.status_code == 201, response.text
    id = await lease(client, "ticks")
    events = await events_of(client, id)
    assert published(events) == {"transport": "schedule", "schedule": "nightly"}

"""Cluster mode end to end: several `broker serve` nodes on one PostgreSQL serve the same queues.

What is proven, each over real HTTP and WebSocket connections to separate
processes: a message published through one node is consumed through another
and counted alike by all, also with the Python client; competing consumers on
three nodes share a queue with every message delivered once; the leases of a
node killed with ``kill -9`` come back, marked redelivered, to a consumer on
another node; tokens and their revocation hold on every node; queue creation
and deletion reach the other nodes; delays, priorities and dead-lettering hold
across nodes; ``/stats`` names its node and counts cluster-wide; a message
leased through one node can be acked through another.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.conftest import (
    COUNTS_S,
    NODE_DEAD_S,
    PROPAGATION_S,
    RECV_S,
    client_of,
    counts,
    create_queue,
    deliveries,
    eventually,
    known_to,
    open_ws,
    publish,
    publish_batch,
    pull,
    quiet,
    recv,
    send,
    settle_counts,
    shared_queue,
    subscribe,
)
from tests.conftest import ADMIN_PASSWORD, MS, login
from transports.client import Client

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import ClientConnection

    from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.postgres


async def test_published_on_one_node_consumed_on_another(cluster: Cluster) -> None:
    """A REST publish on A wakes B's idle WebSocket consumer; the ack counts on both nodes."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "jobs")
    async with await open_ws(b, await cluster.admin_token(b)) as ws:
        subscription = await subscribe(ws, "jobs")
        # Published after B's consumer went idle: only a wake-up from A's commit
        # (or B's own polling) can bring it to B.
        message_id = await publish(http_a, "jobs", {"order": 7}, headers={"k": "v"})
        [frame] = await deliveries(ws, 1)
        assert frame == {
            "op": "deliver",
            "subscription": subscription,
            "queue": "jobs",
            "tag": frame["tag"],
            "message_id": message_id,
            "content": {"order": 7},
            "headers": {"k": "v"},
            "attempt": 1,
            "redelivered": False,
        }
        await send(ws, op="ack", tags=[frame["tag"]])
        await settle_counts([http_a, http_b], "jobs", pending=0, processing=0, processed=1)
        await quiet(ws, 200 * MS)


async def test_the_python_client_publishes_on_one_node_and_consumes_on_another(
    cluster: Cluster,
) -> None:
    """Pipelined WebSocket publishes confirmed by A are all consumed and acked through B."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "piped")
    options: dict[str, Any] = {"username": "admin", "password": ADMIN_PASSWORD}
    # No reconnection: a lost connection must fail the test, not be papered over.
    async with (
        Client(a.url, reconnect=False, **options) as publisher,
        Client(b.url, reconnect=False, **options) as consumer,
    ):
        ids = await asyncio.wait_for(
            publisher.publish_many("piped", ({"n": n} for n in range(300)), window=50),
            RECV_S,
        )
        got: list[tuple[int, Any, bool]] = []

        async def take_all() -> None:
            async with consumer.subscribe("piped", prefetch=50) as messages:
                async for message in messages:
                    got.append((message.message_id, message.content, message.redelivered))
                    await message.ack()
                    if len(got) == len(ids):
                        return

        await asyncio.wait_for(take_all(), RECV_S)
    assert len(got) == len(set(ids)) == 300
    assert {i: (content, again) for i, content, again in got} == {
        i: ({"n": n}, False) for n, i in enumerate(ids)
    }
    await settle_counts([http_a, http_b], "piped", pending=0, processing=0, processed=300)


async def test_competing_consumers_on_three_nodes_get_each_message_once(cluster: Cluster) -> None:
    """1,500 messages published through three nodes go once each to consumers on all three."""
    nodes = await cluster.start("a", "b", "c")
    https = [await cluster.admin(node) for node in nodes]
    await create_queue(https[0], "work")
    for http in https[1:]:
        await known_to(http, "work")

    total = 1500
    received: list[list[dict[str, Any]]] = [[] for _ in nodes]
    unique: set[int] = set()
    problems: list[str] = []
    all_seen = asyncio.Event()

    async def consume(ws: ClientConnection, into: list[dict[str, Any]]) -> None:
        # Acks each delivery at once, so the three consumers keep competing for credit.
        try:
            async for data in ws:
                frame = json.loads(data)
                if frame["op"] != "deliver":
                    problems.append(f"{frame!r}")
                    all_seen.set()
                    return
                into.append(frame)
                unique.add(frame["message_id"])
                await send(ws, op="ack", tags=[frame["tag"]])
                if len(unique) >= total:
                    all_seen.set()
        except Exception as exc:
            problems.append(repr(exc))
            all_seen.set()

    sockets = [await open_ws(node, await cluster.admin_token(node)) for node in nodes]
    consumers: list[asyncio.Task[None]] = []
    try:
        for ws, into in zip(sockets, received, strict=True):
            await subscribe(ws, "work", prefetch=20)
            consumers.append(asyncio.create_task(consume(ws, into)))
        contents = [{"n": n} for n in range(total)]
        batches = [contents[start : start + 100] for start in range(0, total, 100)]
        published = await asyncio.gather(
            *(
                publish_batch(https[i % len(https)], "work", batch)
                for i, batch in enumerate(batches)
            )
        )
        ids = {message_id for batch_ids in published for message_id in batch_ids}
        assert len(ids) == total
        try:
            await asyncio.wait_for(all_seen.wait(), 60_000 * MS)
        except TimeoutError:
            missing = len(ids - unique)
            raise AssertionError(f"{missing} of {total} messages never delivered") from None
        assert not problems, problems
        await settle_counts(https, "work", pending=0, processing=0, processed=total)
    finally:
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        for ws in sockets:
            await ws.close()

    every = [frame for frames in received for frame in frames]
    assert unique == ids
    assert len(every) == total, "a message was delivered twice"
    assert all(not f["redelivered"] and f["attempt"] == 1 for f in every)
    assert all(frames for frames in received), [len(frames) for frames in received]


async def test_leases_of_a_killed_node_go_to_a_consumer_on_another(cluster: Cluster) -> None:
    """kill -9 of a node holding 30 leases: they reach B's consumer, redelivered, attempt 2."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    # A lease far longer than the test: only the node's death can free them.
    await shared_queue(http_a, http_b, "leases", lease=600)
    ids = await publish_batch(http_a, "leases", [{"n": n} for n in range(40)])

    ws_a = await open_ws(a, await cluster.admin_token(a))
    await subscribe(ws_a, "leases", prefetch=30)
    held = {frame["message_id"] for frame in await deliveries(ws_a, 30)}
    assert len(held) == 30
    # B sees the leases: they are in the database, not only in A's memory. (A
    # may have claimed a few more than it delivered, hence no exact split.)
    await eventually(
        lambda: counts(http_b, "leases"),
        lambda seen: seen["processing"] >= 30 and seen["pending"] + seen["processing"] == 40,
        within=COUNTS_S,
        what="A's 30 leases counted by B",
    )

    a.kill()
    await ws_a.close()

    async with await open_ws(b, await cluster.admin_token(b)) as ws_b:
        await subscribe(ws_b, "leases", prefetch=100)
        # The 10 A never delivered may come at once; the 30 once A is presumed dead.
        frames = await deliveries(ws_b, 40, within=NODE_DEAD_S)
        await send(ws_b, op="ack", tags=[f["tag"] for f in frames])
        by_id = {f["message_id"]: f for f in frames}
        assert sorted(by_id) == sorted(ids), "a message was lost or delivered twice"
        assert {(by_id[i]["redelivered"], by_id[i]["attempt"]) for i in held} == {(True, 2)}
        # A message A claimed but never delivered may come back marked (DESIGN.md,
        # data flow 7): a duplicate is never silent, a false alarm is allowed.
        others = {(by_id[i]["redelivered"], by_id[i]["attempt"]) for i in set(ids) - held}
        assert others <= {(False, 1), (True, 2)}, others
        await settle_counts([http_b], "leases", pending=0, processing=0, processed=40)
        await quiet(ws_b, 300 * MS)


@pytest.mark.parametrize(
    "change",
    [{"disabled": True}, {"password": "a-new-password-for-carol"}],
    ids=["disabled", "password-changed"],
)
async def test_a_token_works_on_every_node_until_revoked_on_one(
    cluster: Cluster, change: dict[str, Any]
) -> None:
    """Carol's token from A works on B; disabling her (or a new password) on A ends it on B."""
    a, b = await cluster.start("a", "b")
    http_a = await cluster.admin(a)
    response = await http_a.post(
        "/users",
        json={
            "username": "carol",
            "password": "carol-password",
            "permissions": [{"pattern": "carol.*", "actions": ["consume"]}],
        },
    )
    assert response.status_code == 201, response.text
    token = (await login(a.url, "carol", "carol-password"))["access_token"]
    async with client_of(a, token) as carol_a, client_of(b, token) as carol_b:
        await eventually(
            lambda: carol_b.get("/queues"),
            lambda r: r.status_code == 200,
            within=PROPAGATION_S,
            what="carol's token from A accepted by B",
        )
        response = await http_a.patch("/users/carol", json=change)
        assert response.status_code == 200, response.text
        assert (await carol_a.get("/queues")).status_code == 401
        await eventually(
            lambda: carol_b.get("/queues"),
            lambda r: r.status_code == 401,
            within=PROPAGATION_S,
            what="carol's revoked token refused by B",
        )


async def test_a_refresh_token_logged_out_on_one_node_is_refused_on_another(
    cluster: Cluster,
) -> None:
    """B rotates a refresh token A issued, and refuses one that was logged out on A."""
    a, b = await cluster.start("a", "b")
    response = await (await cluster.admin(a)).post(
        "/users", json={"username": "carol", "password": "carol-password"}
    )
    assert response.status_code == 201, response.text
    kept = await login(a.url, "carol", "carol-password")
    ended = await login(a.url, "carol", "carol-password")
    async with client_of(a, ended["access_token"]) as carol_a, client_of(b) as anonymous_b:
        async with client_of(b, kept["access_token"]) as carol_b:
            await eventually(
                lambda: carol_b.get("/queues"),
                lambda r: r.status_code == 200,
                within=PROPAGATION_S,
                what="carol known to B",
            )
        # The control: a refresh token A issued is good on B.
        rotated = await anonymous_b.post(
            "/auth/refresh", json={"refresh_token": kept["refresh_token"]}
        )
        assert rotated.status_code == 200, rotated.text
        response = await carol_a.post(
            "/auth/logout", json={"refresh_token": ended["refresh_token"]}
        )
        assert response.status_code == 204, response.text
        # No polling: a revoked refresh token accepted even once would mint a new pair.
        refused = await anonymous_b.post(
            "/auth/refresh", json={"refresh_token": ended["refresh_token"]}
        )
        assert refused.status_code == 401, refused.text


async def test_a_queue_created_and_deleted_on_one_node(cluster: Cluster) -> None:
    """B learns a queue A created; when A deletes it, B ends its subscription and answers 404."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    info = await shared_queue(http_a, http_b, "lifecycle", max_attempts=3)
    assert info["max_attempts"] == 3
    listed = await http_b.get("/queues")
    assert "lifecycle" in [q["name"] for q in listed.json()]

    async with await open_ws(b, await cluster.admin_token(b)) as ws:
        subscription = await subscribe(ws, "lifecycle")
        assert (await http_a.delete("/queues/lifecycle")).status_code == 204
        # What a consumer gets when its queue is deleted (transports/ws/session.py).
        ended = await recv(ws, PROPAGATION_S)
        assert ended == {
            "op": "unsubscribed",
            "subscription": subscription,
            "requeued": 0,
            "reason": "queue deleted",
        }
        await eventually(
            lambda: http_b.get("/queues/lifecycle"),
            lambda r: r.status_code == 404,
            within=PROPAGATION_S,
            what="B forgetting the deleted queue",
        )
        assert "lifecycle" not in [q["name"] for q in (await http_b.get("/queues")).json()]
        # The connection stays usable: subscribing again is refused with an error frame.
        await send(ws, op="subscribe", queue="lifecycle", prefetch=1, ref="again")
        refused = await recv(ws)
        assert (refused["op"], refused["code"], refused.get("ref")) == (
            "error",
            "queue_not_found",
            "again",
        ), refused


async def test_a_delayed_message_reaches_another_node_on_time(cluster: Cluster) -> None:
    """A message published on A with delay_ms waits in the database, then reaches B's consumer.

    That a claim never takes a message before its time is proven on the storage
    (test_postgres: claims skip delayed messages); here, that B is woken when it is due.
    """
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "later")
    async with await open_ws(b, await cluster.admin_token(b)) as ws:
        await subscribe(ws, "later")
        message_id = await publish(http_a, "later", "soon", delay_ms=3000)
        info = (await http_b.get("/queues/later")).json()
        assert (info["pending"], info["delayed"]) == (1, 1), info
        [frame] = await deliveries(ws, 1, within=3000 * MS + RECV_S)
        assert frame["message_id"] == message_id
        await send(ws, op="ack", tags=[frame["tag"]])
        await settle_counts([http_a, http_b], "later", pending=0, processing=0, processed=1)


async def test_priorities_hold_across_nodes(cluster: Cluster) -> None:
    """Priorities 1, 9, 5 published on A, B, C are pulled on A as 9, 5, 1."""
    nodes = await cluster.start("a", "b", "c")
    http_a, http_b, http_c = [await cluster.admin(node) for node in nodes]
    await shared_queue(http_a, http_b, "ranked")
    await known_to(http_c, "ranked")
    await publish(http_a, "ranked", "low", priority=1)
    await publish(http_b, "ranked", "high", priority=9)
    await publish(http_c, "ranked", "middle", priority=5)
    await settle_counts([http_a], "ranked", pending=3)
    # A itself published only the lowest: the order comes from the database.
    messages = await pull(http_a, "ranked", max=3, wait=2)
    assert [(m["priority"], m["content"]) for m in messages] == [
        (9, "high"),
        (5, "middle"),
        (1, "low"),
    ]
    settled = await http_a.post("/messages/ack", json={"ids": [m["message_id"] for m in messages]})
    assert settled.status_code == 200, settled.text


async def test_a_dedup_id_is_one_message_across_nodes(cluster: Cluster) -> None:
    """A dedup_id published on A, then repeated on B (and on C, started later), is one message."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "orders")
    first = await http_a.post("/queues/orders/messages", json={"content": 1, "dedup_id": "o-7"})
    assert first.status_code == 201, first.text

    async def repeat(http: httpx.AsyncClient) -> dict[str, Any]:
        response = await http.post(
            "/queues/orders/messages", json={"content": 2, "dedup_id": "o-7"}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    # B learns the id from A's commit by a notification (milliseconds; a repeat
    # through B within that time would be a second message, as the README says).
    await asyncio.sleep(200 * MS)
    again = await repeat(http_b)
    assert (again["message_id"], again["duplicate"]) == (first.json()["message_id"], True)
    [c] = await cluster.start("c")  # reads the window from the database at start
    late = await repeat(await cluster.admin(c))
    assert (late["message_id"], late["duplicate"]) == (first.json()["message_id"], True)
    await settle_counts([http_a, http_b], "orders", pending=1)


async def test_nacks_on_two_nodes_exhaust_attempts_into_the_dead_letter_queue(
    cluster: Cluster,
) -> None:
    """max_attempts 2: a nack on B then a nack on A dead-letter the message, seen from C."""
    nodes = await cluster.start("a", "b", "c")
    http_a, http_b, http_c = [await cluster.admin(node) for node in nodes]
    await create_queue(http_a, "graveyard")
    await create_queue(http_a, "fragile", max_attempts=2, dead_letter_queue="graveyard")
    for http in (http_b, http_c):
        await known_to(http, "fragile")
        await known_to(http, "graveyard")
    message_id = await publish(http_a, "fragile", {"job": 1})

    for attempt, http in ((1, http_b), (2, http_a)):
        [message] = await pull(http, "fragile", max=1, wait=2)
        assert (message["message_id"], message["attempt"]) == (message_id, attempt), message
        assert message["redelivered"] is (attempt > 1)
        nacked = await http.post(
            f"/messages/{message_id}/nack", params={"requeue": "true", "reason": f"try {attempt}"}
        )
        assert nacked.status_code == 200, nacked.text

    await settle_counts([http_c], "fragile", pending=0, processing=0, failed=0)
    await settle_counts([http_c], "graveyard", pending=1)
    page = await http_c.get("/queues/graveyard/messages", params={"status": "pending"})
    assert page.status_code == 200, page.text
    [dead] = page.json()["messages"]
    assert (dead["message_id"], dead["dead_lettered_from"]) == (message_id, "fragile"), dead
    assert dead["content"] == {"job": 1}


async def test_stats_name_their_node_and_count_cluster_wide(cluster: Cluster) -> None:
    """Each node's /stats names that node and counts the messages published through all."""
    nodes = await cluster.start("a", "b", "c")
    https = [await cluster.admin(node) for node in nodes]
    await create_queue(https[0], "counted")
    for http in https[1:]:
        await known_to(http, "counted")
    for size, http in zip((3, 2, 2), https, strict=True):
        await publish_batch(http, "counted", list(range(size)))

    for node, http in zip(nodes, https, strict=True):

        async def stats(http: httpx.AsyncClient = http) -> dict[str, Any]:
            response = await http.get("/stats")
            assert response.status_code == 200, response.text
            return dict(response.json())

        seen = await eventually(
            stats,
            lambda s: s["messages_pending"] == 7,
            within=COUNTS_S,
            what=f"node {node.name}'s /stats counting 7 pending",
        )
        assert seen["broker_specific"].get("node") == node.name
        assert seen["broker_specific"]["storage"]["backend"] == "postgres"
        assert (seen["messages_processing"], seen["messages_processed"]) == (0, 0)
        assert (await counts(http, "counted"))["pending"] == 7


async def test_a_message_pulled_on_one_node_is_acked_on_another(cluster: Cluster) -> None:
    """A REST lease taken through A is settled by POST /messages/{id}/ack through B."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "handoff")
    message_id = await publish(http_a, "handoff", "x")
    [message] = await pull(http_a, "handoff", max=1, wait=2)
    assert message["message_id"] == message_id
    acked = await http_b.post(f"/messages/{message_id}/ack")
    assert acked.status_code == 200, acked.text
    assert acked.json() == {"message_id": message_id, "status": "processed"}
    await settle_counts([http_a, http_b], "handoff", pending=0, processing=0, processed=1)


async def test_a_lease_taken_on_one_node_is_extended_through_another(cluster: Cluster) -> None:
    """A 1 s REST lease from A, touched through B for 60 s, outlives its first deadline on A."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "slow")
    message_id = await publish(http_a, "slow", "x")
    [message] = await pull(http_a, "slow", max=1, wait=2, lease=1)
    touched = await http_b.post(f"/messages/{message_id}/touch", json={"lease": 60})
    assert touched.status_code == 200, touched.text
    # Past the first deadline: had A not been told, it would have requeued it by now.
    await asyncio.sleep(2000 * MS)
    assert await pull(http_b, "slow", max=1, wait=0) == []
    await settle_counts([http_a, http_b], "slow", pending=0, processing=1)
    acked = await http_a.post(f"/messages/{message['message_id']}/ack")
    assert acked.status_code == 200, acked.text
    unknown = await http_b.post("/messages/123456789/touch", json={"lease": 5})
    assert unknown.status_code == 409, unknown.text


async def test_drop_head_drops_the_oldest_from_the_database(cluster: Cluster) -> None:
    """max_length 3 with drop_head: five publishes leave the three newest, the others in the DLQ."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await create_queue(http_a, "overflowed")
    await create_queue(
        http_a, "capped", max_length=3, overflow="drop_head", dead_letter_queue="overflowed"
    )
    await known_to(http_b, "capped")
    ids = [await publish(http_a, "capped", n) for n in range(5)]
    await settle_counts([http_a, http_b], "capped", pending=3)
    kept = (await http_b.get("/queues/capped/messages", params={"status": "pending"})).json()
    assert [m["message_id"] for m in kept["messages"]] == ids[2:]
    moved = (await http_b.get("/queues/overflowed/messages")).json()
    assert [m["message_id"] for m in moved["messages"]] == ids[:2]


async def test_drop_head_without_a_dlq_ends_them_readable_on_every_node(cluster: Cluster) -> None:
    """Issue 25: the dropped ones keep their history, ended, and count on no node."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await create_queue(http_a, "capped", max_length=3, overflow="drop_head")
    await known_to(http_b, "capped")
    ids = [await publish(http_a, "capped", n) for n in range(5)]
    await settle_counts([http_a, http_b], "capped", pending=3, processing=0, failed=0)
    listed = (await http_b.get("/queues/capped/messages")).json()
    assert [m["message_id"] for m in listed["messages"]] == ids[2:]
    for id in ids[:2]:
        ended = (await http_b.get(f"/queues/capped/messages/{id}")).json()
        assert (ended["status"], ended["last_error"]) == ("ended", "maxlen")
        events = (await http_b.get(f"/messages/{id}/history")).json()["events"]
        assert (events[-1]["event"], events[-1]["reason"]) == ("dropped", "maxlen")


async def test_another_nodes_lease_is_settled_only_with_permission(cluster: Cluster) -> None:
    """Through B, a user without rights on the queue can't ack, nack or touch A's lease."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "theirs")
    created = await http_a.post(
        "/users",
        json={
            "username": "dora",
            "password": "dora-password",
            "permissions": [{"pattern": "mine", "actions": ["publish", "consume"]}],
        },
    )
    assert created.status_code == 201, created.text
    message_id = await publish(http_a, "theirs", "x")
    [_] = await pull(http_a, "theirs", max=1, wait=2)
    token = (await login(b.url, "dora", "dora-password"))["access_token"]
    async with client_of(b, token) as dora:
        for path, body in (
            (f"/messages/{message_id}/ack", None),
            (f"/messages/{message_id}/nack", None),
            (f"/messages/{message_id}/touch", {"lease": 60}),
        ):
            refused = await dora.post(path, json=body)
            assert refused.status_code in (403, 404, 409), (path, refused.text)
    await settle_counts([http_a, http_b], "theirs", pending=0, processing=1)
    acked = await http_b.post(f"/messages/{message_id}/ack")
    assert acked.status_code == 200, acked.text

"""Webhooks on two PostgreSQL nodes: both run the webhook, claims keep them apart."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.conftest import (
    PROPAGATION_S,
    client_of,
    eventually,
    publish_batch,
    shared_queue,
)
from tests.conftest import MS, login
from tests.transports.webhooks.receiver import Receiver, Reply

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster
    from tests.transports.webhooks.receiver import Received

pytestmark = pytest.mark.postgres

COUNT = 200


async def test_two_nodes_post_each_message_once(cluster: Cluster) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        a, b = await cluster.start("a", "b", BROKER_WEBHOOK_ALLOWED_HOSTS="127.0.0.1")
        http_a, http_b = await cluster.admin(a), await cluster.admin(b)
        await shared_queue(http_a, http_b, "jobs")
        response = await http_a.post(
            "/queues/jobs/webhooks", json={"url": receiver.url, "concurrency": 4}
        )
        assert response.status_code == 201, response.text
        receiver.use_secret(response.json()["secret"])
        hook_id = response.json()["id"]

        async def hooks_on_b() -> list[dict[str, Any]]:
            listed: list[dict[str, Any]] = (await http_b.get("/queues/jobs/webhooks")).json()
            return listed

        await eventually(hooks_on_b, lambda hooks: len(hooks) == 1, within=PROPAGATION_S, what="b")
        # B's consumer runs once the webhook reached it: wait for it in /consumers.

        async def consumers_b() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = (await http_b.get("/consumers")).json()
            return found

        await eventually(
            consumers_b,
            lambda found: any(hook_id in c["label"] for c in found),
            within=PROPAGATION_S,
            what="b's webhook consumer",
        )
        in_flight: set[int] = set()
        overlaps: list[int] = []

        async def answer(request: Received) -> Reply:
            message_id = request.json["message_id"]
            if message_id in in_flight:
                overlaps.append(message_id)
            in_flight.add(message_id)
            await asyncio.sleep(10 * MS)
            in_flight.discard(message_id)
            return Reply()

        receiver.answer = answer
        ids: list[int] = []
        for start in range(0, COUNT, 50):
            ids += await publish_batch(http_a, "jobs", list(range(start, start + 50)))
        posted = await eventually(
            lambda: asyncio.sleep(0, [r.json["message_id"] for r in receiver.received]),
            lambda seen: len(seen) >= COUNT,
            within=30_000 * MS,
            what="every message posted",
        )
        await asyncio.sleep(500 * MS)
        posted = [r.json["message_id"] for r in receiver.received]
        assert sorted(posted) == sorted(ids), "each message posted exactly once"
        assert overlaps == []
        assert all(r.signed for r in receiver.received)
        [on_a] = (await http_a.get("/queues/jobs/webhooks")).json()
        [on_b] = await hooks_on_b()
        assert on_a["deliveries"] + on_b["deliveries"] == COUNT
        # Both nodes took part (each posted some), not one doing all the work.
        assert on_a["deliveries"] > 0
        assert on_b["deliveries"] > 0
    finally:
        await receiver.stop()


async def test_a_webhook_survives_a_restart_of_every_node(cluster: Cluster) -> None:
    """Both nodes stopped, one started again: the webhook posts what was published meanwhile."""
    receiver = Receiver()
    await receiver.start()
    try:
        a, b = await cluster.start("a", "b", BROKER_WEBHOOK_ALLOWED_HOSTS="127.0.0.1")
        http_a, http_b = await cluster.admin(a), await cluster.admin(b)
        await shared_queue(http_a, http_b, "jobs")
        response = await http_a.post("/queues/jobs/webhooks", json={"url": receiver.url})
        assert response.status_code == 201, response.text
        receiver.use_secret(response.json()["secret"])
        paused = await http_a.patch(
            f"/queues/jobs/webhooks/{response.json()['id']}", json={"paused": True}
        )
        assert paused.status_code == 200
        ids = await publish_batch(http_a, "jobs", [1, 2, 3])
        a.terminate()
        b.terminate()
        await b.start()
        async with client_of(b, str((await login(b.url))["access_token"])) as http:
            [hook] = (await http.get("/queues/jobs/webhooks")).json()
            assert hook["state"] == "paused"
            assert receiver.received == []
            resumed = await http.patch(
                f"/queues/jobs/webhooks/{hook['id']}", json={"paused": False}
            )
            assert resumed.status_code == 200
            await eventually(
                lambda: asyncio.sleep(0, len(receiver.received)),
                lambda n: n >= 3,
                within=10_000 * MS,
                what="posted after the restart",
            )
        assert sorted(r.json["message_id"] for r in receiver.received) == ids
        assert all(r.signed for r in receiver.received)
    finally:
        await receiver.stop()

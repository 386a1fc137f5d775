"""Retries on two PostgreSQL nodes: a pause made on one holds on the other; back-off,
cancel and reschedule of messages that wait in the database."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.conftest import (
    PROPAGATION_S,
    RECV_S,
    client_of,
    counts,
    deliveries,
    eventually,
    open_ws,
    publish,
    pull,
    quiet,
    send,
    settle_counts,
    shared_queue,
    subscribe,
)
from tests.conftest import MS, login

if TYPE_CHECKING:
    import httpx

    from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.postgres


async def paused_on(http: httpx.AsyncClient, queue: str, paused: bool) -> dict[str, Any]:
    """Wait until the node behind ``http`` shows the queue (un)paused."""

    async def probe() -> dict[str, Any]:
        info: dict[str, Any] = (await http.get(f"/queues/{queue}")).json()
        return info

    return await eventually(
        probe, lambda info: info["paused"] is paused, within=PROPAGATION_S, what="pause"
    )


async def test_a_pause_made_on_one_node_holds_on_the_other(cluster: Cluster) -> None:
    """Paused through A: B's consumer gets nothing, publishes on either node are accepted;
    resumed through B: B's consumer gets them."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "held")
    response = await http_a.post("/queues/held/pause")
    assert response.status_code == 200, response.text
    await paused_on(http_b, "held", True)
    async with await open_ws(b, await cluster.admin_token(b)) as ws:
        await subscribe(ws, "held")
        first = await publish(http_a, "held", 1)
        second = await publish(http_b, "held", 2)
        await quiet(ws, 800 * MS)
        assert await pull(http_a, "held", wait=0.2) == []
        assert (await counts(http_b, "held"))["pending"] == 2
        response = await http_b.post("/queues/held/resume")
        assert response.status_code == 200, response.text
        frames = await deliveries(ws, 2, within=RECV_S)
        assert sorted(frame["message_id"] for frame in frames) == [first, second]
        await send(ws, op="ack", tags=[frame["tag"] for frame in frames])
    await paused_on(http_a, "held", False)


async def test_a_backoff_is_kept_in_the_database_for_any_node(cluster: Cluster) -> None:
    """Nacked on A with a 1 s back-off, the message waits in the database; B gets it after."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "slow", retry={"min_ms": 1000, "jitter": 0.0})
    message_id = await publish(http_a, "slow", "x")
    [message] = await pull(http_a, "slow", wait=2)
    nacked_at = time.monotonic()
    assert (await http_a.post(f"/messages/{message_id}/nack")).status_code == 200

    async def view() -> dict[str, Any]:
        found: dict[str, Any] = (await http_b.get(f"/queues/slow/messages/{message_id}")).json()
        return found

    # The nack is answered before its batch commits (write-behind): B reads the database.
    seen = await eventually(
        view, lambda v: v["status"] == "pending", within=PROPAGATION_S, what="requeue"
    )
    assert seen["waiting"] == "retry_backoff", seen
    assert await pull(http_b, "slow") == []
    again: list[dict[str, Any]] = []
    while not again:
        assert time.monotonic() - nacked_at < 10, "never redelivered"
        again = await pull(http_b, "slow", wait=1)
    assert time.monotonic() - nacked_at >= 0.95
    assert (again[0]["message_id"], again[0]["attempt"]) == (message_id, 2)
    assert message["attempt"] == 1


async def test_cancel_and_reschedule_a_message_another_node_published(cluster: Cluster) -> None:
    """A delayed message published on A is rescheduled to now and another cancelled, on B."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "later")
    keep = await publish(http_a, "later", "keep", delay_ms=60_000)
    drop = await publish(http_a, "later", "drop", delay_ms=60_000)
    response = await http_b.delete(f"/queues/later/messages/{drop}")
    assert response.status_code == 204, response.text
    ended = (await http_a.get(f"/queues/later/messages/{drop}")).json()
    assert (ended["status"], ended["last_error"]) == ("ended", "cancelled")
    info = (await http_a.get("/queues/later")).json()
    assert (info["pending"], info["delayed"], info["failed"]) == (1, 1, 0)
    response = await http_b.patch(f"/queues/later/messages/{keep}", json={"delay_ms": 0})
    assert response.status_code == 200, response.text
    [message] = await pull(http_a, "later", wait=2)
    assert message["message_id"] == keep
    response = await http_b.delete(f"/queues/later/messages/{keep}")
    assert response.status_code == 409, response.text
    assert (await http_a.post(f"/messages/{keep}/ack")).status_code == 200
    await settle_counts([http_a, http_b], "later", pending=0, processing=0, processed=1)


async def test_policy_backoff_and_pause_survive_a_restart_of_every_node(cluster: Cluster) -> None:
    """Both nodes stopped and one started again: the policy, a back-off and a pause hold."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "kept", retry={"min_ms": 600_000, "jitter": 0.0})
    await shared_queue(http_a, http_b, "held")
    message_id = await publish(http_a, "kept", "x")
    [_] = await pull(http_a, "kept", wait=2)
    assert (await http_a.post(f"/messages/{message_id}/nack")).status_code == 200
    assert (await http_a.post("/queues/held/pause")).status_code == 200
    await publish(http_a, "held", "y")
    await paused_on(http_b, "held", True)
    a.terminate()
    b.terminate()
    await b.start()
    async with client_of(b, str((await login(b.url))["access_token"])) as http:
        kept = (await http.get("/queues/kept")).json()
        assert kept["retry"]["min_ms"] == 600_000, kept
        view = (await http.get(f"/queues/kept/messages/{message_id}")).json()
        assert (view["status"], view["waiting"]) == ("pending", "retry_backoff"), view
        assert await pull(http, "kept", wait=0.3) == []
        held = (await http.get("/queues/held")).json()
        assert (held["paused"], held["pending"]) == (True, 1), held
        assert await pull(http, "held", wait=0.3) == []

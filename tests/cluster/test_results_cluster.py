"""Results and histories on two PostgreSQL nodes: a waiter on B woken by an ack on A."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.conftest import publish, pull, shared_queue

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.postgres


async def test_a_waiter_on_b_is_woken_by_an_ack_with_a_result_on_a(cluster: Cluster) -> None:
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "rpc")
    waiter = asyncio.ensure_future(
        http_b.post("/queues/rpc/messages", params={"wait_result": 20}, json={"content": "q"})
    )
    messages: list[dict[str, Any]] = []
    for _ in range(50):
        messages = await pull(http_a, "rpc", wait=1)
        if messages:
            break
    [message] = messages
    acked = await http_a.post(
        f"/messages/{message['message_id']}/ack", json={"result": {"answer": "a"}}
    )
    assert acked.status_code == 200, acked.text
    response = await asyncio.wait_for(waiter, 15)
    assert response.status_code == 201, response.text
    assert response.json()["result"] == {"answer": "a"}
    id = message["message_id"]
    # B reads the history A wrote: published on B, delivered and acked on A.
    history = (await http_b.get(f"/messages/{id}/history")).json()["events"]
    assert [e["event"] for e in history] == ["published", "delivered", "acked"]


async def test_result_get_on_b_and_history_after_a_restart(cluster: Cluster) -> None:
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "jobs")
    id = await publish(http_a, "jobs", "x")
    waiter = asyncio.ensure_future(http_b.get(f"/messages/{id}/result", params={"wait": 20}))
    [message] = await pull(http_a, "jobs", wait=5)
    nacked = await http_a.post(f"/messages/{id}/nack", params={"reason": "flaky"})
    assert nacked.status_code == 200, nacked.text
    messages: list[dict[str, Any]] = []
    for _ in range(50):
        messages = await pull(http_b, "jobs", wait=1)
        if messages:
            break
    assert messages[0]["message_id"] == message["message_id"] == id
    assert (await http_b.post(f"/messages/{id}/ack", json={"result": 7})).status_code == 200
    response = await asyncio.wait_for(waiter, 15)
    assert response.json()["result"] == 7
    before = (await http_a.get(f"/messages/{id}/history")).json()["events"]
    assert [e["event"] for e in before] == [
        "published",
        "delivered",
        "nacked",
        "delivered",
        "acked",
    ]
    assert before[2]["reason"] == "flaky"
    b.terminate()
    await b.start()
    http_b2 = await cluster.admin(b)
    after = (await http_b2.get(f"/messages/{id}/history")).json()["events"]
    assert after == before


async def test_an_ack_and_a_nack_on_the_other_node_are_in_the_history(cluster: Cluster) -> None:
    """A message A holds, settled over B's REST API: B records the event (it took the row over)."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "remote")
    first = await publish(http_a, "remote", "one")
    second = await publish(http_a, "remote", "two")
    held: list[dict[str, Any]] = []
    for _ in range(50):
        held += await pull(http_a, "remote", wait=1, max=10)
        if len(held) == 2:
            break
    assert sorted(m["message_id"] for m in held) == sorted([first, second])
    nacked = await http_b.post(
        f"/messages/{second}/nack", params={"reason": "elsewhere", "delay_ms": 60000}
    )
    assert nacked.status_code == 200, nacked.text
    acked = await http_b.post(f"/messages/{first}/ack")
    assert acked.status_code == 200, acked.text
    for http in (http_a, http_b):
        events = (await http.get(f"/messages/{first}/history")).json()["events"]
        assert [e["event"] for e in events] == ["published", "delivered", "acked"], events
        assert events[0]["transport"] == "rest"
        assert events[0]["user"] == "admin"
        events = (await http.get(f"/messages/{second}/history")).json()["events"]
        assert [e["event"] for e in events] == ["published", "delivered", "nacked"], events
        assert events[2]["reason"] == "elsewhere"
        assert events[2]["delay_ms"] == 60000

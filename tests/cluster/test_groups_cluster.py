"""Message groups on two PostgreSQL nodes: one in flight per group cluster-wide, order kept."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.conftest import (
    PROPAGATION_S,
    deliveries,
    open_ws,
    pull,
    quiet,
    shared_queue,
    subscribe,
)

if TYPE_CHECKING:
    import httpx

    from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.postgres


async def publish_grouped(
    http: httpx.AsyncClient, queue: str, messages: list[dict[str, Any]]
) -> list[int]:
    response = await http.post(f"/queues/{queue}/messages/batch", json={"messages": messages})
    assert response.status_code == 201, response.text
    return [int(m["message_id"]) for m in response.json()["messages"]]


async def test_one_in_flight_per_group_across_nodes_in_order(cluster: Cluster) -> None:
    """Consumers on both nodes pull at once: never two of a group in flight, each group in order."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "orders")
    groups = [f"customer-{n}" for n in range(4)]
    await publish_grouped(
        http_a,
        "orders",
        [{"content": {"g": g, "seq": seq}, "group": g} for seq in range(6) for g in groups],
    )
    seen: dict[str, list[int]] = {g: [] for g in groups}
    in_flight: set[str] = set()
    by_node = {"a": 0, "b": 0}

    async def worker(http: httpx.AsyncClient, node: str) -> None:
        deadline = time.monotonic() + 60
        while sum(len(s) for s in seen.values()) < 24:
            assert time.monotonic() < deadline, seen
            messages = await pull(http, "orders", max=3, wait=0.3)
            for message in messages:
                group = message["group"]
                assert group not in in_flight, f"two of {group} in flight"
                in_flight.add(group)
            await asyncio.sleep(0.02)
            for message in messages:
                seen[message["group"]].append(message["content"]["seq"])
                in_flight.discard(message["group"])
                by_node[node] += 1
                response = await http.post(f"/messages/{message['message_id']}/ack")
                assert response.status_code == 200, response.text

    await asyncio.gather(worker(http_a, "a"), worker(http_b, "b"), worker(http_b, "b"))
    assert seen == {g: list(range(6)) for g in groups}
    assert by_node["a"] and by_node["b"], by_node


async def test_a_nack_on_one_node_keeps_the_group_order_on_the_other(cluster: Cluster) -> None:
    """The head leased on A blocks its group on B; nacked, B gets it again before the next."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "seq")
    first, second = await publish_grouped(
        http_a, "seq", [{"content": 1, "group": "g"}, {"content": 2, "group": "g"}]
    )
    [message] = await pull(http_a, "seq", max=5, wait=2)
    assert message["message_id"] == first
    assert await pull(http_b, "seq", max=5, wait=0.5) == []
    assert (await http_a.post(f"/messages/{first}/nack")).status_code == 200
    again: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not again:
        assert time.monotonic() < deadline, "never redelivered"
        again = await pull(http_b, "seq", max=5, wait=0.5)
    assert [m["message_id"] for m in again] == [first]
    assert (await http_b.post(f"/messages/{first}/ack")).status_code == 200
    last: list[dict[str, Any]] = []
    while not last:
        assert time.monotonic() < deadline, "the next never came"
        last = await pull(http_a, "seq", max=5, wait=0.5)
    assert [m["message_id"] for m in last] == [second]


async def test_an_ack_on_one_node_lets_the_other_claim_the_next_of_the_group(
    cluster: Cluster,
) -> None:
    """B's subscriber waits behind A's lease; after A's ack, B pushes the group's next."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "wake")
    first, second = await publish_grouped(
        http_a, "wake", [{"content": 1, "group": "g"}, {"content": 2, "group": "g"}]
    )
    [message] = await pull(http_a, "wake", max=5, wait=2)
    assert message["message_id"] == first
    async with await open_ws(b, await cluster.admin_token(b)) as ws:
        await subscribe(ws, "wake")
        await quiet(ws, 0.8)  # the group's one slot is A's
        assert (await http_a.post(f"/messages/{first}/ack")).status_code == 200
        [frame] = await deliveries(ws, 1, within=PROPAGATION_S)
        assert (frame["message_id"], frame["group"]) == (second, "g")

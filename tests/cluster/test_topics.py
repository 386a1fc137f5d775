"""Topics on two PostgreSQL nodes: a binding made on one node routes the next publish on another."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.cluster.conftest import (
    deliveries,
    open_ws,
    pull,
    recv,
    send,
    shared_queue,
    subscribe,
)

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster


async def test_binding_on_one_node_routes_on_the_other_at_once(cluster: Cluster) -> None:
    """Bind on A, publish on B right after the 201: routed; unbind on B, publish on A: not."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "eu")
    await shared_queue(http_a, http_b, "all")
    assert (await http_a.post("/topics", json={"name": "orders"})).status_code == 201
    # B has never seen the topic: its first publish reads it from the database.
    empty = await http_b.post("/topics/orders/publish", json={"routing_key": "x", "content": 0})
    assert empty.json()["routed"] == []
    for queue, pattern in (("eu", "orders.eu.*"), ("all", "#")):
        bound = await http_a.post(
            "/topics/orders/bindings", json={"queue": queue, "pattern": pattern}
        )
        assert bound.status_code == 201
        # No wait: the binding must be in force on B as soon as A answered.
        published = await http_b.post(
            "/topics/orders/publish", json={"routing_key": "orders.eu.new", "content": queue}
        )
        assert published.status_code == 201, published.text
        routed = sorted(r["queue"] for r in published.json()["routed"])
        assert routed == (["eu"] if queue == "eu" else ["all", "eu"])
    route = await http_b.get("/topics/orders/route", params={"routing_key": "orders.eu.x"})
    assert route.json()["queues"] == ["all", "eu"]
    assert [b["queue"] for b in (await http_b.get("/topics/orders")).json()["bindings"]] == [
        "all",
        "eu",
    ]
    unbound = await http_b.request(
        "DELETE", "/topics/orders/bindings", json={"queue": "eu", "pattern": "orders.eu.*"}
    )
    assert unbound.status_code == 204
    published = await http_a.post(
        "/topics/orders/publish", json={"routing_key": "orders.eu.new", "content": "late"}
    )
    assert [r["queue"] for r in published.json()["routed"]] == ["all"]
    assert len(await pull(http_a, "eu", max=10)) == 2


async def test_topic_publish_on_one_node_reaches_a_consumer_on_the_other(
    cluster: Cluster,
) -> None:
    """A topic publish over A's WebSocket is delivered to B's consumer of the bound queue."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "jobs")
    await http_b.post("/topics", json={"name": "t"})
    await http_b.post("/topics/t/bindings", json={"queue": "jobs", "pattern": "job.#"})
    async with (
        await open_ws(b, await cluster.admin_token(b)) as consumer,
        await open_ws(a, await cluster.admin_token(a)) as publisher,
    ):
        await subscribe(consumer, "jobs")
        await send(publisher, op="publish", topic="t", routing_key="job.1", content=1, ref=1)
        confirm = await recv(publisher)
        [frame] = await deliveries(consumer, 1)
    assert confirm["op"] == "confirm", confirm
    assert frame["message_id"] == confirm["routed"][0]["message_id"]


async def test_deleting_a_queue_on_one_node_drops_its_bindings_everywhere(
    cluster: Cluster,
) -> None:
    """A queue deleted on A leaves no binding in B's view of the topic."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "gone")
    await http_a.post("/topics", json={"name": "t"})
    await http_a.post("/topics/t/bindings", json={"queue": "gone", "pattern": "#"})
    assert (await http_a.delete("/queues/gone")).status_code == 204
    assert (await http_b.get("/topics/t")).json()["bindings"] == []
    published = await http_b.post("/topics/t/publish", json={"routing_key": "x", "content": 1})
    assert published.json()["routed"] == []

"""Recurring schedules on two nodes of one PostgreSQL: each instant fires once, on one node.

Both nodes run a scheduler over the same schedules and race for every
instant; the claim (a compare-and-set) lets one win and the batch's own
compare-and-set takes back a second message for an instant. What is
proven here over real processes: every instant of two schedules (one
created through each node) is published exactly once while both nodes
run, and the survivor goes on firing after the other is killed with
``kill -9``, still never twice for an instant.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.conftest import PROPAGATION_S, known_to
from tests.conftest import MS

if TYPE_CHECKING:
    import httpx

    from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.postgres

RELOAD_S = 5.0
"""`broker_core.scheduler.RELOAD_S`: within this a node fires a schedule another node made."""


async def _instants(http: httpx.AsyncClient, queue: str) -> dict[str, list[float]]:
    """The ``x-scheduled-for`` instants of every message in ``queue``, per schedule, sorted."""
    response = await http.get(f"/queues/{queue}/messages", params={"limit": 1000})
    assert response.status_code == 200, response.text
    out: dict[str, list[float]] = {}
    for message in response.json()["messages"]:
        headers: dict[str, Any] = message["headers"]
        at = datetime.fromisoformat(headers["x-scheduled-for"]).timestamp()
        out.setdefault(headers["x-schedule"], []).append(at)
    return {name: sorted(values) for name, values in out.items()}


def _gaps(instants: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(instants)]


async def test_two_nodes_fire_each_instant_once(cluster: Cluster) -> None:
    """With both nodes racing for every instant, each is published once, none is skipped."""
    a, b = await cluster.start("a", "b")
    on_a, on_b = await cluster.admin(a), await cluster.admin(b)
    response = await on_a.post("/queues", json={"name": "ticks"})
    assert response.status_code == 201, response.text
    await known_to(on_b, "ticks")
    for http, name in ((on_a, "from-a"), (on_b, "from-b")):
        body = {"name": name, "every_ms": 1000, "content": {"s": name}}
        response = await http.post("/queues/ticks/schedules", json=body)
        assert response.status_code == 201, response.text
    # Each node learns of the other's schedule within RELOAD_S; then both race.
    await asyncio.sleep(RELOAD_S + 4.5)
    seen = await _instants(on_b, "ticks")
    for name in ("from-a", "from-b"):
        instants = seen[name]
        assert len(instants) >= 6, seen
        assert len(set(instants)) == len(instants), f"{name}: an instant fired twice"
        assert set(_gaps(instants)) == {1.0}, f"{name}: {_gaps(instants)}"
    listed = (await on_a.get("/queues/ticks/schedules")).json()
    assert [s["name"] for s in listed] == ["from-a", "from-b"]


async def test_the_survivor_fires_after_the_other_node_is_killed(cluster: Cluster) -> None:
    """Killing one node mid-run: the other goes on firing, and still no instant twice."""
    a, b = await cluster.start("a", "b")
    on_a, on_b = await cluster.admin(a), await cluster.admin(b)
    assert (await on_a.post("/queues", json={"name": "ticks"})).status_code == 201
    await known_to(on_b, "ticks")
    body = {"name": "tick", "every_ms": 1000, "content": 1}
    assert (await on_a.post("/queues/ticks/schedules", json=body)).status_code == 201
    await asyncio.sleep(RELOAD_S + 1.5)
    a.kill()
    killed_at = datetime.now().timestamp()
    await asyncio.sleep(3000 * MS + PROPAGATION_S)
    instants = (await _instants(on_b, "ticks"))["tick"]
    assert len(set(instants)) == len(instants), "an instant fired twice"
    assert max(instants) > killed_at + 1.5, "node b stopped firing"

"""Rights checked continuously across nodes: a change made on one node ends sessions on another.

A user's WebSocket consumer is on node B; the admin changes the user through
node A. Within 1 s (DESIGN.md, "Trust") B ends what the user may no longer
hold, as it would for a change made on B itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.cluster.conftest import (
    PROPAGATION_S,
    client_of,
    counts,
    deliveries,
    eventually,
    open_ws,
    publish_batch,
    recv,
    settle_counts,
    shared_queue,
    subscribe,
)
from tests.conftest import MS, login

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

    from tests.cluster.conftest import Cluster, Node

pytestmark = pytest.mark.postgres

REVOKED_WITHIN = 1000 * MS
"""The contract's bound: a change of rights takes effect within 1 s, on every node."""


async def _consumer_on_b(cluster: Cluster) -> tuple[Node, Node, ClientConnection, int]:
    """Nodes A and B, and user ursula's socket on B subscribed to ``jobs``, holding two."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "jobs")
    response = await http_a.post(
        "/users",
        json={
            "username": "ursula",
            "password": "ursula-password",
            "permissions": [{"pattern": "*", "actions": ["consume"]}],
        },
    )
    assert response.status_code == 201, response.text
    token = (await login(a.url, "ursula", "ursula-password"))["access_token"]
    async with client_of(b, token) as ursula_b:
        await eventually(
            lambda: ursula_b.get("/queues"),
            lambda r: r.status_code == 200,
            within=PROPAGATION_S,
            what="ursula known to B",
        )
    ws = await open_ws(b, token)
    subscription = await subscribe(ws, "jobs", prefetch=2)
    await publish_batch(http_a, "jobs", ["one", "two"])
    await deliveries(ws, 2)
    return a, b, ws, subscription


async def test_a_permission_removed_on_one_node_revokes_a_subscription_on_another(
    cluster: Cluster,
) -> None:
    """Consume removed through A: ursula's subscription on B ends as revoked within 1 s."""
    a, b, ws, subscription = await _consumer_on_b(cluster)
    async with ws:
        response = await (await cluster.admin(a)).patch(
            "/users/ursula", json={"permissions": [{"pattern": "*", "actions": ["publish"]}]}
        )
        assert response.status_code == 200, response.text
        frame = await recv(ws, REVOKED_WITHIN)
    assert frame == {
        "op": "unsubscribed",
        "subscription": subscription,
        "requeued": 2,
        "reason": "revoked",
    }
    https = [await cluster.admin(a), await cluster.admin(b)]
    await settle_counts(https, "jobs", pending=2, processing=0)


async def test_a_user_disabled_on_one_node_is_closed_4003_on_another(cluster: Cluster) -> None:
    """Ursula disabled through A: her socket on B closes with 4003 within 1 s; her two requeue."""
    a, b, ws, _ = await _consumer_on_b(cluster)
    async with ws:
        response = await (await cluster.admin(a)).patch("/users/ursula", json={"disabled": True})
        assert response.status_code == 200, response.text
        with pytest.raises(ConnectionClosed):
            frame: Any = json.loads(await asyncio.wait_for(ws.recv(), REVOKED_WITHIN))
            raise AssertionError(f"unexpected frame: {frame!r}")
    assert (ws.close_code, ws.close_reason) == (4003, "revoked: user disabled")
    assert (await counts(await cluster.admin(b), "jobs"))["processed"] == 0
    https = [await cluster.admin(a), await cluster.admin(b)]
    await settle_counts(https, "jobs", pending=2, processing=0)


async def test_a_service_token_revoked_on_one_node_is_refused_and_closed_on_another(
    cluster: Cluster,
) -> None:
    """A token made on A works on B; revoked on A, its socket on B closes 4003 within 1 s."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "jobs")
    response = await http_a.post("/tokens", json={"name": "worker", "scopes": ["consume:jobs"]})
    assert response.status_code == 201, response.text
    created = response.json()
    async with client_of(b, created["token"]) as machine_b:
        await eventually(
            lambda: machine_b.get("/queues/jobs"),
            lambda r: r.status_code == 200,
            within=PROPAGATION_S,
            what="the token known to B",
        )
        ws = await open_ws(b, created["token"])
        async with ws:
            await subscribe(ws, "jobs", prefetch=2)
            await publish_batch(http_a, "jobs", ["one", "two"])
            await deliveries(ws, 2)
            assert (await http_a.delete(f"/tokens/{created['id']}")).status_code == 204
            with pytest.raises(ConnectionClosed):
                frame: Any = json.loads(await asyncio.wait_for(ws.recv(), REVOKED_WITHIN))
                raise AssertionError(f"unexpected frame: {frame!r}")
        assert ws.close_code == 4003
        assert (await machine_b.get("/queues/jobs")).status_code == 401
    await settle_counts([http_a, http_b], "jobs", pending=2, processing=0)

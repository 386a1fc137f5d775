"""A message published on the node of a consumer with free credit: claimed as it is written.

Such a message is written already processing and owned by its node
(`broker_core.journal.Insert.claimed`) and delivered from memory, with no
claim round trip. What is proven over real connections to two nodes: it is
delivered once (no other node can claim its row, its consumer gets it first
time, not redelivered), it is counted processing cluster-wide, its ack
settles it, and when its node is killed before it is acked it reaches a
consumer on the other node, redelivered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.cluster.conftest import (
    COUNTS_S,
    NODE_DEAD_S,
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
from tests.conftest import MS

if TYPE_CHECKING:
    from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.postgres


async def test_a_message_published_beside_its_consumer_is_delivered_once(cluster: Cluster) -> None:
    """Published one by one on A, where a consumer has credit: each reaches it once, B
    counts it processing and can't lease it, and the acks settle them cluster-wide."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    await shared_queue(http_a, http_b, "local", lease=600)
    async with await open_ws(a, await cluster.admin_token(a)) as ws_a:
        await subscribe(ws_a, "local", prefetch=10)
        ids = [await publish(http_a, "local", {"n": n}) for n in range(5)]
        frames = await deliveries(ws_a, 5)
        assert sorted(f["message_id"] for f in frames) == ids
        assert all(not f["redelivered"] and f["attempt"] == 1 for f in frames)
        await eventually(
            lambda: counts(http_b, "local"),
            lambda seen: (seen["pending"], seen["processing"]) == (0, 5),
            within=COUNTS_S,
            what="A's 5 leases counted by B",
        )
        # Held by A in the database too: B's pull finds nothing to lease.
        assert await pull(http_b, "local", max=10, wait=0.3) == []
        await send(ws_a, op="ack", tags=[f["tag"] for f in frames])
        await settle_counts([http_a, http_b], "local", pending=0, processing=0, processed=5)
        await quiet(ws_a, 300 * MS)


async def test_a_message_held_by_a_killed_publishing_node_reaches_another(
    cluster: Cluster,
) -> None:
    """kill -9 of A after its publishes were confirmed, beside A's consumer that holds them:
    B's consumer gets every one, once, redelivered."""
    a, b = await cluster.start("a", "b")
    http_a, http_b = await cluster.admin(a), await cluster.admin(b)
    # A lease far longer than the test: only the node's death can free them.
    await shared_queue(http_a, http_b, "held", lease=600)
    ws_a = await open_ws(a, await cluster.admin_token(a))
    await subscribe(ws_a, "held", prefetch=10)
    ids = [await publish(http_a, "held", {"n": n}) for n in range(5)]
    # Delivered or not yet (the crash may come between the commit and the delivery):
    # what counts is that the database holds them for A, not for whoever asks.
    await eventually(
        lambda: counts(http_b, "held"),
        lambda seen: (seen["pending"], seen["processing"]) == (0, 5),
        within=COUNTS_S,
        what="A's 5 messages counted processing by B",
    )
    a.kill()
    await ws_a.close()
    async with await open_ws(b, await cluster.admin_token(b)) as ws_b:
        await subscribe(ws_b, "held", prefetch=10)
        frames = await deliveries(ws_b, 5, within=NODE_DEAD_S)
        assert sorted(f["message_id"] for f in frames) == ids
        assert {(f["redelivered"], f["attempt"]) for f in frames} == {(True, 2)}
        await send(ws_b, op="ack", tags=[f["tag"] for f in frames])
        await settle_counts([http_b], "held", pending=0, processing=0, processed=5)
        await quiet(ws_b, 300 * MS)

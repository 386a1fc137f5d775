"""Message groups over REST: order per group, competing consumers, nack, lease expiry, fairness."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tests.transports.rest.test_retries import consume, get_message, make_queue, publish

if TYPE_CHECKING:
    import httpx


async def test_group_is_stored_and_shown_on_every_publish_route(client: httpx.AsyncClient) -> None:
    """Single, batch and fan-out publishes keep `group`; browse and GET of one show it."""
    await make_queue(client)
    await make_queue(client, "other")
    one = await publish(client, 1, group="order-1")
    response = await client.post(
        "/queues/jobs/messages/batch",
        json={"messages": [{"content": 2, "group": "order-2"}, {"content": 3}]},
    )
    assert response.status_code == 201, response.text
    response = await client.post(
        "/publish", json={"queues": ["jobs", "other"], "content": 4, "group": "order-3"}
    )
    assert response.status_code == 201, response.text
    assert (await get_message(client, one))["group"] == "order-1"
    page = (await client.get("/queues/jobs/messages")).json()["messages"]
    assert [m.get("group") for m in page] == ["order-1", "order-2", None, "order-3"]
    assert (await client.get("/queues/other/messages")).json()["messages"][0]["group"] == "order-3"


async def test_bad_group_and_concurrency_are_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    """A group over 128 characters or not a string, group_concurrency < 1: 422 naming it."""
    await make_queue(client)
    for group in ["g" * 129, 5, "", ["a"]]:
        response = await client.post("/queues/jobs/messages", json={"content": 1, "group": group})
        assert response.status_code == 422, response.text
        assert "group" in response.text
    response = await client.post("/queues", json={"name": "bad", "group_concurrency": 0})
    assert response.status_code == 422 and "group_concurrency" in response.text
    response = await client.patch("/queues/jobs", json={"group_concurrency": 0})
    assert response.status_code == 422 and "group_concurrency" in response.text
    response = await client.patch("/queues/jobs", json={"group_concurrency": 3})
    assert response.status_code == 200 and response.json()["group_concurrency"] == 3
    assert (await client.get("/queues/jobs")).json()["single_active_consumer"] is False


async def test_competing_consumers_keep_order_per_group(client: httpx.AsyncClient) -> None:
    """Four consumers pulling at once: at most one per group in flight, each group in order."""
    await make_queue(client)
    groups = [f"g{n}" for n in range(5)]
    for seq in range(8):
        for group in groups:
            await publish(client, {"group": group, "seq": seq}, group=group)
    seen: dict[str, list[int]] = {group: [] for group in groups}
    in_flight: set[str] = set()

    async def worker() -> None:
        while True:
            messages = await consume(client, count=3)
            if not messages:
                return
            for message in messages:
                group = message["group"]
                assert group not in in_flight, f"two of {group} in flight"
                in_flight.add(group)
            await asyncio.sleep(0.01)
            for message in messages:
                seen[message["group"]].append(message["content"]["seq"])
                in_flight.discard(message["group"])
                response = await client.post(f"/messages/{message['message_id']}/ack")
                assert response.status_code == 200, response.text

    await asyncio.gather(*(worker() for _ in range(4)))
    assert seen == {group: list(range(8)) for group in groups}


async def test_nack_and_lease_expiry_keep_order(client: httpx.AsyncClient) -> None:
    """A nacked or expired message of a group goes again before the later ones of its group."""
    await make_queue(client, lease=2.0)
    first = await publish(client, 1, group="g")
    second = await publish(client, 2, group="g")
    [message] = await consume(client, count=5)
    assert message["message_id"] == first
    assert await consume(client) == []  # the group's one slot is taken
    assert (await client.post(f"/messages/{first}/nack")).status_code == 200
    [again] = await consume(client, count=5)
    assert (again["message_id"], again["redelivered"]) == (first, True)
    await asyncio.sleep(2.3)  # its lease expires
    [third] = await consume(client, count=5, wait=2.0)
    assert third["message_id"] == first and third["attempt"] == 3
    assert (await client.post(f"/messages/{first}/ack")).status_code == 200
    [last] = await consume(client, count=5)
    assert last["message_id"] == second


async def test_small_group_is_not_served_last(client: httpx.AsyncClient) -> None:
    """200 messages of one group, then 3 of another: the small one goes in the first rounds."""
    await make_queue(client, group_concurrency=5)
    response = await client.post(
        "/queues/jobs/messages/batch",
        json={"messages": [{"content": n, "group": "big"} for n in range(200)]},
    )
    assert response.status_code == 201
    for n in range(3):
        await publish(client, n, group="small")
    order: list[str] = []
    while len(order) < 12:
        messages = await consume(client, count=1)
        [message] = messages
        order.append(message["group"])
        await client.post(f"/messages/{message['message_id']}/ack")
    assert order[:6] == ["big", "small"] * 3, order


async def test_ungrouped_messages_share_the_ring(client: httpx.AsyncClient) -> None:
    """Ungrouped messages are one round-robin slot beside the groups."""
    await make_queue(client)
    for n in range(5):
        await publish(client, n)
    for n in range(5):
        await publish(client, n, group=f"g{n}")
    got = await consume(client, count=10)
    groups = [m.get("group") for m in got]
    assert groups[:2] == [None, "g0"], groups
    # Ungrouped goes once per round over the five groups, then the rest of it.
    assert groups[:6].count(None) == 1 and set(groups[1:6]) == {f"g{n}" for n in range(5)}
    assert len(got) == 10


async def test_a_message_held_by_its_group_says_so(client: httpx.AsyncClient) -> None:
    """Pending behind its group: `waiting: "group"` and `blocked_by` the message ahead of it."""
    await make_queue(client)
    first = await publish(client, 1, group="g")
    second = await publish(client, 2, group="g")
    third = await publish(client, 3, group="g")
    free = await publish(client, 4, group="h")
    head = await get_message(client, first)
    # Next to go, held only by the lack of a consumer (`waiting` of results and history).
    assert (head["waiting"], head["blocked_by"]) == ("no_consumer", None)
    assert (await get_message(client, second))["blocked_by"] == first
    [message] = await consume(client, count=1)
    assert message["message_id"] == first
    view = await get_message(client, second)
    assert (view["waiting"], view["blocked_by"], view["group"]) == ("group", first, "g")
    assert (await get_message(client, third))["blocked_by"] == second
    assert (await get_message(client, free))["waiting"] == "no_consumer"
    page = (await client.get("/queues/jobs/messages", params={"status": "pending"})).json()
    assert [m["blocked_by"] for m in page["messages"]] == [first, second, None]

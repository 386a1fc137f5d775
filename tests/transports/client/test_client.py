"""The client library against a real server: publish, subscribe, REST, reconnect, tokens."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import ADMIN_PASSWORD, MS
from transports.client import AuthError, Client, RequestError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from tests.conftest import BrokerServer


@pytest.fixture
async def api(server: BrokerServer) -> AsyncIterator[Client]:
    """A client of ``server`` logged in as the admin."""
    async with Client(
        server.url, username="admin", password=ADMIN_PASSWORD, connect_timeout=5000 * MS
    ) as client:
        yield client


async def make_queue(client: httpx.AsyncClient, name: str = "jobs") -> None:
    response = await client.post("/queues", json={"name": name})
    assert response.status_code == 201, response.text


async def stored(client: httpx.AsyncClient, queue: str = "jobs") -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = (await client.get(f"/queues/{queue}/messages")).json()[
        "messages"
    ]
    return messages


async def test_publish_returns_the_committed_message_id(
    api: Client, client: httpx.AsyncClient
) -> None:
    """`publish` returns the id of the message, stored with its content and headers."""
    await make_queue(client)
    message_id = await api.publish("jobs", {"n": 1}, headers={"k": "v"}, priority=3)
    [message] = await stored(client)
    assert (message["message_id"], message["content"], message["headers"]) == (
        message_id,
        {"n": 1},
        {"k": "v"},
    )
    assert message["priority"] == 3


async def test_publish_many_confirms_every_message_in_order(
    api: Client, client: httpx.AsyncClient
) -> None:
    """`publish_many` pipelines its messages and returns their ids in publish order."""
    await make_queue(client)
    ids = await api.publish_many("jobs", range(1000), window=100)
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)
    assert (await client.get("/queues/jobs")).json()["pending"] == 1000


async def test_publish_many_keeps_at_most_window_publishes_unconfirmed(
    api: Client, client: httpx.AsyncClient
) -> None:
    """No more than ``window`` publishes wait for their confirm at any moment."""
    await make_queue(client)
    peak = 0
    done = False

    async def watch() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, api.unconfirmed)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    ids = await api.publish_many("jobs", range(500), window=20)
    done = True
    await watcher
    assert len(set(ids)) == 500
    assert 1 < peak <= 20


async def test_publish_many_awaits_every_publish_then_raises_the_first_failure(
    api: Client, client: httpx.AsyncClient
) -> None:
    """Past a full queue's limit the others are still confirmed; the first refusal is raised."""
    response = await client.post("/queues", json={"name": "jobs", "max_length": 5})
    assert response.status_code == 201, response.text
    with pytest.raises(RequestError) as refused:
        await api.publish_many("jobs", range(12), window=3)
    assert refused.value.code == "queue_full"
    assert (await client.get("/queues/jobs")).json()["pending"] == 5


async def test_publishes_of_one_turn_past_the_frame_limit_leave_in_several_batches(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """300 publishes of 8 KiB in one turn (2.4 MB) are split under the broker's 1 MiB frame."""
    await make_queue(client)
    body = "x" * 8192
    # No reconnection: a connection closed for a too-big frame must fail the test.
    async with Client(
        server.url, username="admin", password=ADMIN_PASSWORD, reconnect=False
    ) as api:
        ids = await api.publish_many("jobs", [body] * 300, window=300)
    assert len(set(ids)) == 300
    assert (await client.get("/queues/jobs")).json()["pending"] == 300


async def test_publish_to_a_missing_queue_raises(api: Client) -> None:
    """A refused publish raises `RequestError` with the broker's code."""
    with pytest.raises(RequestError) as refused:
        await api.publish("nope", 1)
    assert refused.value.code == "queue_not_found"


async def test_subscription_yields_messages_that_ack_settles(
    api: Client, client: httpx.AsyncClient
) -> None:
    """A subscription yields published messages; acking them marks them processed."""
    await make_queue(client)
    ids = await api.publish_many("jobs", ["a", "b", "c"])
    async with api.subscribe("jobs", prefetch=2) as jobs:
        got = []
        async for message in jobs:
            got.append((message.message_id, message.content, message.attempt))
            await message.ack()
            if len(got) == 3:
                break
    assert got == [(ids[0], "a", 1), (ids[1], "b", 1), (ids[2], "c", 1)]
    info = (await client.get("/queues/jobs")).json()
    assert (info["processed"], info["pending"], info["processing"]) == (3, 0, 0)


async def test_nack_requeues_the_message(api: Client, client: httpx.AsyncClient) -> None:
    """A nacked message is delivered again, marked redelivered."""
    await make_queue(client)
    await api.publish("jobs", "x")
    async with api.subscribe("jobs", prefetch=1) as jobs:
        first = await jobs.get(5000 * MS)
        assert first is not None
        await first.nack(requeue=True)
        again = await jobs.get(5000 * MS)
        assert again is not None
        await again.ack()
    assert (again.message_id, again.attempt, again.redelivered) == (first.message_id, 2, True)


async def test_subscribe_to_a_missing_queue_raises(api: Client) -> None:
    """Subscribing to a queue that doesn't exist raises `RequestError`."""
    with pytest.raises(RequestError) as refused:
        await api.subscribe("nope").start()
    assert refused.value.code == "queue_not_found"


async def test_deleting_the_queue_ends_the_subscription(
    api: Client, client: httpx.AsyncClient
) -> None:
    """Iterating a subscription whose queue was deleted raises `RequestError`."""
    await make_queue(client)
    async with api.subscribe("jobs") as jobs:
        assert (await client.delete("/queues/jobs")).status_code == 204
        with pytest.raises(RequestError) as ended:
            await jobs.get(5000 * MS)
    assert ended.value.code == "queue_not_found"


async def test_msgpack_client_round_trips(server: BrokerServer, client: httpx.AsyncClient) -> None:
    """A MessagePack client publishes and receives the same values."""
    await make_queue(client)
    async with Client(server.url, username="admin", password=ADMIN_PASSWORD, msgpack=True) as api:
        await api.publish("jobs", {"list": [1, 2.5, None]})
        async with api.subscribe("jobs") as jobs:
            message = await jobs.get(5000 * MS)
    assert message is not None
    assert message.content == {"list": [1, 2.5, None]}


async def test_rest_queue_calls(api: Client) -> None:
    """`create_queue`, `queues` and `queue` speak the REST API."""
    created = await api.create_queue("jobs", max_attempts=3)
    assert (created.name, created.max_attempts) == ("jobs", 3)
    assert [queue.name for queue in await api.queues()] == ["jobs"]
    assert (await api.queue("jobs")).pending == 0


async def test_rest_consume_and_ack(api: Client, client: httpx.AsyncClient) -> None:
    """`consume` leases messages over REST and their `ack` settles them over REST."""
    await make_queue(client)
    await api.publish("jobs", {"rest": True})
    [message] = await api.consume("jobs", max=5)
    assert message.content == {"rest": True}
    await message.ack()
    assert (await client.get("/queues/jobs")).json()["processed"] == 1


async def test_stats_returns_the_document(api: Client) -> None:
    """`stats` returns the broker's /stats document."""
    stats = await api.stats()
    assert "uptime_seconds" in stats


async def test_wrong_password_raises_auth_error(server: BrokerServer) -> None:
    """Bad credentials raise `AuthError` on first use."""
    async with Client(server.url, username="admin", password="wrong-password") as api:
        with pytest.raises(AuthError):
            await api.queues()


async def test_reconnects_and_resubscribes_after_a_server_restart(
    server: BrokerServer, api: Client, client: httpx.AsyncClient
) -> None:
    """After the server restarts, the client reconnects, resubscribes and publishes again."""
    await make_queue(client)
    jobs = await api.subscribe("jobs", prefetch=5).start()
    await server.restart()
    await api.publish("jobs", "after restart")
    message = await jobs.get(5000 * MS)
    assert message is not None
    assert message.content == "after restart"
    assert api.reconnects >= 1
    await message.ack()
    await jobs.close()


@pytest.mark.parametrize("settings_overrides", [{"access_token_ttl_s": 2}], ids=["short-ttl"])
async def test_token_is_refreshed_before_it_expires(api: Client, client: httpx.AsyncClient) -> None:
    """The client refreshes its token and renews its connection before the token expires."""
    await make_queue(client)
    async with api.subscribe("jobs") as jobs:
        first = api.tokens
        await asyncio.sleep(2500 * MS)
        await api.publish("jobs", "still here")
        message = await jobs.get(5000 * MS)
    assert message is not None
    assert api.reconnects == 0
    assert first is not None and api.tokens is not None
    assert api.tokens.access_token != first.access_token

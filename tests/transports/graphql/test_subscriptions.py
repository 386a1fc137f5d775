"""GraphQL subscriptions on a real server, through gql's WebSocket transport.

Every behaviour is checked over both protocols: graphql-transport-ws and the
legacy graphql-ws (Apollo) subprotocol.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportError, TransportQueryError, TransportServerError
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import ConnectionClosed

from broker_core.auth import Action, Permission, User
from broker_core.messages import Entry, MessageView, QueueEvent
from tests.conftest import MS, make_user
from transports.graphql.subscriptions import EventFeed, Inbox

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

    from gql.client import AsyncClientSession

    from tests.conftest import BrokerServer

TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL  # "graphql-transport-ws"
LEGACY_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL  # "graphql-ws"
TIMEOUT = 5000 * MS

MESSAGES = """
subscription($queue: String!, $prefetch: Int!) {
  messages(queue: $queue, prefetch: $prefetch) {
    messageId queue status content headers attempt redelivered leaseExpiresAt
  }
}
"""
ACK = "mutation($id: Long!) { ack(messageId: $id) { status } }"


@pytest.fixture(params=[TRANSPORT_WS, LEGACY_WS])
def protocol(request: pytest.FixtureRequest) -> str:
    """Each test runs over both GraphQL-over-WebSocket protocols."""
    return str(request.param)


@asynccontextmanager
async def ws_session(
    server: BrokerServer, protocol: str, init: dict[str, Any], close_timeout: float = TIMEOUT
) -> AsyncIterator[AsyncClientSession]:
    """A gql session over a WebSocket to ``/graphql``, ``init`` sent in connection_init."""
    transport = WebsocketsTransport(
        url=f"{server.ws_url}/graphql",
        init_payload=init,
        subprotocols=[protocol],
        connect_timeout=TIMEOUT,
        ack_timeout=TIMEOUT,
        close_timeout=close_timeout,
    )
    async with Client(transport=transport, execute_timeout=TIMEOUT) as session:
        yield session


def subscribe(
    session: AsyncClientSession, query: str, **variables: Any
) -> AsyncGenerator[dict[str, Any], None]:
    return session.subscribe(GraphQLRequest(query, variable_values=variables))


async def next_of(events: AsyncGenerator[dict[str, Any], None]) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        return await anext(events)


async def make_queue(client: httpx.AsyncClient, name: str = "jobs") -> None:
    response = await client.post("/queues", json={"name": name})
    assert response.status_code == 201, response.text


async def publish(client: httpx.AsyncClient, content: object, queue: str = "jobs") -> int:
    response = await client.post(f"/queues/{queue}/messages", json={"content": content})
    assert response.status_code == 201, response.text
    return int(response.json()["message_id"])


async def queue_info(client: httpx.AsyncClient) -> dict[str, Any]:
    info: dict[str, Any] = (await client.get("/queues/jobs")).json()
    return info


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``check`` passes (the server acts on a closed subscription asynchronously)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            if await check():
                return
            await asyncio.sleep(10 * MS)


async def test_consume_and_ack_through_a_subscription(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """A messages subscription receives a delivery, and the ack mutation settles it."""
    await make_queue(client)
    message_id = await publish(client, {"order": 7})
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
        message = (await next_of(events))["messages"]
        assert message["messageId"] == message_id
        assert (message["status"], message["content"]) == ("processing", {"order": 7})
        assert (message["attempt"], message["redelivered"]) == (1, False)
        assert message["leaseExpiresAt"]
        response = await client.post(
            "/graphql", json={"query": ACK, "variables": {"id": message_id}}
        )
        assert response.json() == {"data": {"ack": {"status": "processed"}}}
        await events.aclose()
    info = await queue_info(client)
    assert (info["processed"], info["processing"], info["pending"]) == (1, 0, 0)


async def test_ack_mutation_over_the_same_socket(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """gql acks a delivery with a mutation on the socket it consumes on, over both protocols."""
    await make_queue(client)
    message_id = await publish(client, {"order": 8})
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
        message = (await next_of(events))["messages"]
        assert message["messageId"] == message_id
        acked = await session.execute(GraphQLRequest(ACK, variable_values={"id": message_id}))
        assert acked == {"ack": {"status": "processed"}}
        await events.aclose()
    info = await queue_info(client)
    assert (info["processed"], info["processing"], info["pending"]) == (1, 0, 0)


async def test_queries_run_over_the_socket(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """A query over the WebSocket answers once and completes, over both protocols."""
    await make_queue(client)
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        result = await session.execute(GraphQLRequest("{ queues { name } }"))
    assert result == {"queues": [{"name": "jobs"}]}


async def test_a_mutation_over_the_socket_is_checked_like_over_http(
    server: BrokerServer, client: httpx.AsyncClient, protocol: str
) -> None:
    """A mutation the user may not make over the socket is a GraphQL error, as over HTTP."""
    await make_queue(client)
    token = await make_user(client, server, "reader", [{"pattern": "*", "actions": ["consume"]}])
    async with ws_session(server, protocol, {"token": token}) as session:
        with pytest.raises(TransportQueryError) as refused:
            await session.execute(
                GraphQLRequest('mutation { publish(queue: "jobs", content: 1) { messageId } }')
            )
    assert "forbidden" in str(refused.value), refused.value


async def test_prefetch_bounds_the_messages_held(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """With prefetch 1 the next message comes only once the first is acked."""
    await make_queue(client)
    first, second = [await publish(client, n) for n in range(2)]
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(session, MESSAGES, queue="jobs", prefetch=1)
        assert (await next_of(events))["messages"]["messageId"] == first
        info = await queue_info(client)
        assert (info["processing"], info["pending"]) == (1, 1)
        await client.post("/graphql", json={"query": ACK, "variables": {"id": first}})
        assert (await next_of(events))["messages"]["messageId"] == second
        await events.aclose()


async def test_ending_a_subscription_requeues_what_it_held(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """Messages a subscription still held go back to pending, marked redelivered, when it ends."""
    await make_queue(client)
    message_id = await publish(client, "job")
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
        assert (await next_of(events))["messages"]["messageId"] == message_id
        await events.aclose()

        async def requeued() -> bool:
            info = await queue_info(client)
            return (info["pending"], info["processing"], info["consumers"]) == (1, 0, 0)

        await eventually(requeued)
    response = await client.get("/queues/jobs/messages/consume")
    [message] = response.json()["messages"]
    assert (message["message_id"], message["attempt"], message["redelivered"]) == (
        message_id,
        2,
        True,
    )


async def test_closing_the_connection_requeues_what_it_held(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """Closing the WebSocket ends its subscriptions: their messages are requeued."""
    await make_queue(client)
    await publish(client, "job")
    # gql waits close_timeout for subscriptions still open before it closes the socket.
    async with ws_session(server, protocol, {"token": admin_token}, 50 * MS) as session:
        events = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
        await next_of(events)
        assert (await queue_info(client))["processing"] == 1

    async def requeued() -> bool:
        info = await queue_info(client)
        return (info["pending"], info["processing"]) == (1, 0)

    await eventually(requeued)
    await events.aclose()


async def test_queue_events_follow_a_publish_ack_cycle(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """queueEvents reports a message's published, delivered and acked events, in order."""
    await make_queue(client)
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(
            session,
            'subscription { queueEvents(queue: "jobs") { type queue messageId at missed } }',
        )
        first = asyncio.ensure_future(next_of(events))
        # The server registers the subscription asynchronously: publish until it reports one.
        async with asyncio.timeout(TIMEOUT):
            while not first.done():
                await publish(client, "probe")
                await asyncio.wait({first}, timeout=20 * MS)
        event = first.result()["queueEvents"]
        assert (event["type"], event["queue"], event["missed"]) == ("published", "jobs", 0)
        assert event["at"]
        message_id = event["messageId"]
        leased = (await client.get("/queues/jobs/messages/consume", params={"max": 1000})).json()
        ids = [m["message_id"] for m in leased["messages"]]
        assert (await client.post("/messages/ack", json={"ids": ids})).status_code == 200
        seen = ["published"]
        while seen[-1] != "acked":
            event = (await next_of(events))["queueEvents"]
            if event["messageId"] == message_id:
                seen.append(event["type"])
        assert seen == ["published", "delivered", "acked"]
        await events.aclose()


async def test_queue_events_of_all_queues_include_creation(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """queueEvents without a queue reports every visible queue's events, creation included."""
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(session, "subscription { queueEvents { type queue } }")
        first = asyncio.ensure_future(next_of(events))
        async with asyncio.timeout(TIMEOUT):
            count = 0
            while not first.done():
                count += 1
                await make_queue(client, f"probe-{count}")
                await asyncio.wait({first}, timeout=20 * MS)
        assert first.result()["queueEvents"]["type"] == "queue_created"
        await events.aclose()


async def test_stats_subscription_pushes_snapshots(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """The stats subscription pushes the stats snapshot again and again."""
    await make_queue(client)
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(
            session, "subscription { stats(intervalMs: 100) { queuesTotal uptimeSeconds } }"
        )
        first = (await next_of(events))["stats"]
        second = (await next_of(events))["stats"]
        await events.aclose()
    assert first["queuesTotal"] == second["queuesTotal"] == 1
    assert second["uptimeSeconds"] >= first["uptimeSeconds"]


async def test_deleting_the_queue_ends_its_subscription_with_an_error(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """A messages subscription whose queue is deleted ends with a queue_not_found error."""
    await make_queue(client)
    await publish(client, "job")
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
        await next_of(events)
        assert (await client.delete("/queues/jobs")).status_code == 204
        with pytest.raises(TransportQueryError) as caught:
            await next_of(events)
    assert "queue_not_found" in str(caught.value)


async def test_subscribing_without_permission_is_an_error(
    server: BrokerServer, client: httpx.AsyncClient, protocol: str
) -> None:
    """A messages subscription needs the consume permission, as a WebSocket consumer does."""
    await make_queue(client)
    response = await client.post(
        "/users",
        json={
            "username": "bob",
            "password": "bob-password",
            "permissions": [{"pattern": "jobs", "actions": ["publish"]}],
        },
    )
    assert response.status_code == 201, response.text
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        login = await anonymous.post(
            "/auth/token", json={"username": "bob", "password": "bob-password"}
        )
    token = login.json()["access_token"]
    async with ws_session(server, protocol, {"token": token}) as session:
        events = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
        with pytest.raises(TransportQueryError) as caught:
            await next_of(events)
    assert "forbidden" in str(caught.value)


@pytest.mark.parametrize("settings_overrides", [{"graphql_max_tokens": 20}])
async def test_legacy_subscription_over_the_token_limit_is_an_error(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str
) -> None:
    """Over graphql-ws, a document over graphql_max_tokens gets an error too_many_tokens."""
    await make_queue(client)
    async with ws_session(server, LEGACY_WS, {"token": admin_token}) as session:
        with pytest.raises(TransportQueryError) as caught:
            await next_of(subscribe(session, MESSAGES, queue="jobs", prefetch=5))
    assert caught.value.errors
    assert caught.value.errors[0]["extensions"]["code"] == "too_many_tokens"


@pytest.mark.parametrize("settings_overrides", [{"graphql_max_tokens": 20}])
async def test_transport_ws_subscription_over_the_token_limit_closes_4400(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str
) -> None:
    """Over graphql-transport-ws such a document closes 4400 with the reason (a syntax error)."""
    await make_queue(client)
    with pytest.raises(TransportError) as caught:
        async with ws_session(server, TRANSPORT_WS, {"token": admin_token}) as session:
            await next_of(subscribe(session, MESSAGES, queue="jobs", prefetch=5))
    closed = caught.value.__cause__
    assert isinstance(closed, ConnectionClosed)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4400
    assert "more than 20 tokens" in closed.rcvd.reason


@pytest.mark.parametrize("settings_overrides", [{"max_consumers_per_connection": 1}])
async def test_subscriptions_per_connection_are_capped(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """A connection holds at most max_consumers_per_connection subscriptions."""
    await make_queue(client)
    await publish(client, "job")
    async with ws_session(server, protocol, {"token": admin_token}) as session:
        events = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
        await next_of(events)
        extra = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
        with pytest.raises(TransportQueryError):
            await next_of(extra)
        await events.aclose()


async def test_authorization_key_in_connection_init_is_accepted(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str, protocol: str
) -> None:
    """connection_init may carry the token as an Authorization: Bearer value."""
    await make_queue(client)
    await publish(client, "job")
    init = {"Authorization": f"Bearer {admin_token}"}
    async with ws_session(server, protocol, init) as session:
        events = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
        assert (await next_of(events))["messages"]["content"] == "job"
        await events.aclose()


@pytest.mark.parametrize("init", [{}, {"token": "not-a-token"}], ids=["missing", "invalid"])
async def test_connection_init_without_a_valid_token_is_refused_with_4403(
    server: BrokerServer, init: dict[str, Any]
) -> None:
    """graphql-transport-ws: a connection_init without a valid token is closed with 4403."""
    with pytest.raises(TransportError) as caught:
        async with ws_session(server, TRANSPORT_WS, init):
            pass
    closed = caught.value.__cause__
    assert isinstance(closed, ConnectionClosed)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4403, "Forbidden")


@pytest.mark.parametrize("init", [{}, {"token": "not-a-token"}], ids=["missing", "invalid"])
async def test_legacy_connection_init_without_a_valid_token_gets_connection_error(
    server: BrokerServer, init: dict[str, Any]
) -> None:
    """graphql-ws: a connection_init without a valid token is answered connection_error."""
    with pytest.raises(TransportServerError) as caught:
        async with ws_session(server, LEGACY_WS, init):
            pass
    assert "unauthorized" in str(caught.value)


EPOCH = datetime.fromtimestamp(0, UTC)


def event(queue: str, n: int) -> QueueEvent:
    return QueueEvent(type="published", queue=queue, at=0.0, message_id=n)


async def test_slow_event_reader_misses_the_oldest_events() -> None:
    """An EventFeed never blocks its caller: past its size it drops the oldest and counts them."""
    admin = User(username="admin", password_hash="", created_at=EPOCH, admin=True)
    feed = EventFeed(admin, None, size=4)
    for n in range(10):
        feed(event("jobs", n))
    first = await feed.next()
    assert (first.message_id, first.missed) == (6, 6)
    assert [(await feed.next()).missed for _ in range(3)] == [0, 0, 0]


async def test_event_feed_shows_only_visible_queues() -> None:
    """An EventFeed for all queues passes only the events of queues its user can see."""
    alice = User(
        username="alice",
        password_hash="",
        created_at=EPOCH,
        permissions=(Permission(pattern="jobs", actions=(Action.CONSUME,)),),
    )
    feed = EventFeed(alice, None, size=10)
    feed(event("secret", 1))
    feed(event("jobs", 2))
    assert (await feed.next()).message_id == 2
    assert not feed.buffer


def test_inbox_is_a_delivery_sink() -> None:
    """An Inbox takes the actor's entries synchronously as processing views."""
    inbox = Inbox()
    inbox("jobs", [Entry(1, content=b'{"a":1}', size=7, created_at=0.0)])
    view = inbox.views.get_nowait()
    assert isinstance(view, MessageView)
    assert (view.message_id, view.queue, view.status, bytes(view.content)) == (
        1,
        "jobs",
        "processing",
        b'{"a":1}',
    )


async def test_revoked_token_ends_the_connection(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A password change closes the user's GraphQL WebSocket; held messages are requeued."""
    from tests.conftest import make_user

    await make_queue(client)
    await publish(client, "job")
    token = await make_user(client, server, "gina", [{"pattern": "*", "actions": ["consume"]}])
    with pytest.raises((TransportError, ConnectionClosed)):
        async with ws_session(server, TRANSPORT_WS, {"token": token}) as session:
            events = subscribe(session, MESSAGES, queue="jobs", prefetch=5)
            await next_of(events)
            response = await client.patch("/users/gina", json={"password": "another-password"})
            assert response.status_code == 200
            await next_of(events)
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while (await client.get("/queues/jobs")).json()["pending"] != 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(20 * MS)

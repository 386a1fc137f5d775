"""Rights checked continuously: a user's open subscriptions and settles follow its changes.

Within 1 s (DESIGN.md, "Trust") of a permission removal, a WebSocket
subscription the user may no longer hold ends with ``unsubscribed {reason:
"revoked"}`` and a GraphQL one with an error ``revoked``; disabling,
deleting or changing the password of the user closes its ``/ws`` with 4003.
What they held is requeued and their later settles are refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import MS, login, make_user
from tests.transports.ws.test_endpoint import (
    eventually,
    make_queue,
    open_ws,
    publish_rest,
    send,
    subscribe,
)

if TYPE_CHECKING:
    from tests.conftest import BrokerServer

REVOKED_WITHIN = 1000 * MS
"""The contract's bound: a change of rights takes effect within 1 s."""
CONSUMER = [{"pattern": "*", "actions": ["publish", "consume"]}]
PUBLISHER = [{"pattern": "*", "actions": ["publish"]}]


async def recv_within(ws: ClientConnection, within: float) -> dict[str, Any]:
    """The next frame, decoded, which must come within ``within`` seconds."""
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return frame


async def closed_within(ws: ClientConnection, within: float) -> tuple[int | None, str | None]:
    """Read until the server closes, within ``within`` seconds; its close code and reason."""
    deadline = time.monotonic() + within
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic()))
    return ws.close_code, ws.close_reason


async def holding(
    server: BrokerServer, client: httpx.AsyncClient, count: int, queue: str = "jobs"
) -> tuple[ClientConnection, int, list[dict[str, Any]]]:
    """User ``ursula`` (may publish and consume) subscribed to ``queue``, holding ``count``."""
    token = await make_user(client, server, "ursula", CONSUMER)
    ws = await open_ws(server, token)
    subscription = await subscribe(ws, queue, prefetch=count)
    await publish_rest(client, list(range(count)), queue)
    frames = [await recv_within(ws, 5000 * MS) for _ in range(count)]
    assert all(frame["op"] == "deliver" for frame in frames), frames
    return ws, subscription, frames


async def set_permissions(client: httpx.AsyncClient, permissions: list[dict[str, Any]]) -> None:
    response = await client.patch("/users/ursula", json={"permissions": permissions})
    assert response.status_code == 200, response.text


# -- WebSocket: a permission removed ------------------------------------------------------


async def test_permission_removal_ends_the_ws_subscription_as_revoked(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Removing consume ends the subscription within 1 s: unsubscribed, reason revoked, requeued."""
    await make_queue(client)
    ws, subscription, _ = await holding(server, client, 3)
    async with ws:
        await set_permissions(client, PUBLISHER)
        frame = await recv_within(ws, REVOKED_WITHIN)
    assert frame == {
        "op": "unsubscribed",
        "subscription": subscription,
        "requeued": 3,
        "reason": "revoked",
    }
    await eventually(client, pending=3, processing=0)


async def test_revoked_deliveries_go_to_another_consumer(
    server: BrokerServer, client: httpx.AsyncClient, admin_token: str
) -> None:
    """What a revoked subscription held is redelivered to another consumer."""
    await make_queue(client)
    ws, _, frames = await holding(server, client, 3)
    async with ws, await open_ws(server, admin_token) as other:
        await subscribe(other, prefetch=10)
        await set_permissions(client, PUBLISHER)
        assert (await recv_within(ws, REVOKED_WITHIN))["op"] == "unsubscribed"
        redelivered = [await recv_within(other, 5000 * MS) for _ in range(3)]
    assert sorted(f["message_id"] for f in redelivered) == sorted(f["message_id"] for f in frames)
    assert all(f["redelivered"] and f["attempt"] == 2 for f in redelivered), redelivered


async def test_ack_of_a_revoked_tag_is_refused_and_the_connection_stays(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """After a revocation, acking an old tag answers an error frame revoked; the socket stays."""
    await make_queue(client)
    ws, _, frames = await holding(server, client, 2)
    async with ws:
        await set_permissions(client, PUBLISHER)
        assert (await recv_within(ws, REVOKED_WITHIN))["op"] == "unsubscribed"
        tag = frames[0]["tag"]
        await send(ws, op="ack", tags=[tag], ref="late")
        error = await recv_within(ws, 5000 * MS)
        await send(ws, op="publish", queue="jobs", content="still here", ref="p")
        confirm = await recv_within(ws, 5000 * MS)
    assert (error["op"], error["code"], error["ref"], error["tags"]) == (
        "error",
        "revoked",
        "late",
        [tag],
    )
    assert (confirm["op"], confirm["ref"]) == ("confirm", "p")
    await eventually(client, pending=3, processing=0, processed=0)


async def test_a_subscription_still_permitted_keeps_delivering(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Only the subscriptions the user may no longer hold end; the others go on."""
    await make_queue(client)
    await make_queue(client, "audit")
    token = await make_user(client, server, "ursula", CONSUMER)
    async with await open_ws(server, token) as ws:
        jobs = await subscribe(ws, "jobs")
        audit = await subscribe(ws, "audit")
        await set_permissions(client, [{"pattern": "jobs", "actions": ["consume"]}])
        frame = await recv_within(ws, REVOKED_WITHIN)
        await publish_rest(client, ["next"], "jobs")
        delivered = await recv_within(ws, 5000 * MS)
    assert (frame["op"], frame["subscription"], frame["reason"]) == (
        "unsubscribed",
        audit,
        "revoked",
    )
    assert (delivered["op"], delivered["subscription"]) == ("deliver", jobs)


# -- WebSocket: the user itself gone --------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"disabled": True}, "revoked: user disabled"),
        ({"password": "a-new-password"}, "revoked: password changed"),
    ],
    ids=["disabled", "password"],
)
async def test_a_changed_user_is_closed_4003_and_its_messages_requeued(
    server: BrokerServer, client: httpx.AsyncClient, change: dict[str, Any], reason: str
) -> None:
    """Disabling the user or changing its password closes its /ws with 4003 within 1 s."""
    await make_queue(client)
    ws, _, _ = await holding(server, client, 2)
    async with ws:
        response = await client.patch("/users/ursula", json=change)
        assert response.status_code == 200, response.text
        assert await closed_within(ws, REVOKED_WITHIN) == (4003, reason)
    await eventually(client, pending=2, processing=0)


async def test_a_deleted_user_is_closed_4003_and_its_messages_requeued(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Deleting the user closes its /ws with 4003 within 1 s; what it held is requeued."""
    await make_queue(client)
    ws, _, _ = await holding(server, client, 2)
    async with ws:
        assert (await client.delete("/users/ursula")).status_code == 204
        assert await closed_within(ws, REVOKED_WITHIN) == (4003, "revoked: user deleted")
    await eventually(client, pending=2, processing=0)


# -- REST: settles and tokens of a changed user ----------------------------------------------


async def _pulled(server: BrokerServer, client: httpx.AsyncClient) -> tuple[str, int]:
    """Ursula's token and the id of a message she leased over REST."""
    await make_queue(client)
    token = await make_user(client, server, "ursula", CONSUMER)
    [message_id] = await publish_rest(client, ["job"])
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as ursula:
        response = await ursula.get("/queues/jobs/messages/consume", params={"max": 1})
    assert response.status_code == 200, response.text
    return token, message_id


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/messages/{id}/ack", None),
        ("/messages/{id}/touch", {"lease": 30}),
        ("/messages/ack", "ids"),
    ],
    ids=["ack", "touch", "batch-ack"],
)
async def test_rest_settles_of_a_disabled_user_are_refused(
    server: BrokerServer, client: httpx.AsyncClient, path: str, body: Any
) -> None:
    """Once its user is disabled, a token's ack, touch and batch ack answer 401 token_revoked."""
    token, message_id = await _pulled(server, client)
    assert (await client.patch("/users/ursula", json={"disabled": True})).status_code == 200
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as ursula:
        payload = {"ids": [message_id]} if body == "ids" else body
        response = await ursula.post(path.format(id=message_id), json=payload)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "token_revoked"
    assert response.json()["detail"] == "token revoked: user disabled"
    await eventually(client, processing=1, processed=0)


async def test_an_old_access_token_is_refused_at_once_after_a_password_change(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """An access token issued before a password change answers 401 token_revoked at once."""
    token = await make_user(client, server, "ursula", CONSUMER)
    response = await client.patch("/users/ursula", json={"password": "a-new-password"})
    assert response.status_code == 200
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as ursula:
        refused = await ursula.get("/queues")
    assert refused.status_code == 401
    assert refused.json() == {
        "status_code": 401,
        "detail": "token revoked: password changed",
        "code": "token_revoked",
    }


async def test_a_token_of_a_deleted_user_is_refused_when_its_name_is_reused(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A new user of a deleted user's name does not inherit the old user's tokens."""
    old_token = await make_user(client, server, "ursula", CONSUMER)
    assert (await client.delete("/users/ursula")).status_code == 204
    new_token = await make_user(client, server, "ursula", PUBLISHER)
    async with httpx.AsyncClient(base_url=server.url) as http:
        old = await http.get("/queues", headers={"Authorization": f"Bearer {old_token}"})
        new = await http.get("/queues", headers={"Authorization": f"Bearer {new_token}"})
    assert (old.status_code, new.status_code) == (401, 200)


# -- GraphQL subscriptions ------------------------------------------------------------------

MESSAGES = "subscription($q: String!) { messages(queue: $q, prefetch: 5) { messageId } }"
TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"


class GraphQLSocket:
    """A raw GraphQL-over-WebSocket client of either protocol, to see every message it gets."""

    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.legacy = protocol == LEGACY_WS

    @classmethod
    async def open(cls, server: BrokerServer, protocol: str, token: str) -> GraphQLSocket:
        ws = await connect(
            f"{server.ws_url}/graphql",
            subprotocols=[protocol],  # type: ignore[list-item]
            open_timeout=5000 * MS,
            close_timeout=1000 * MS,
        )
        socket = cls(ws, protocol)
        await socket.send({"type": "connection_init", "payload": {"token": token}})
        assert (await socket.next(5000 * MS))["type"] == "connection_ack"
        return socket

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def next(self, within: float) -> dict[str, Any]:
        """The next message but keep-alives, within ``within`` seconds; ``next`` for ``data``."""
        deadline = time.monotonic() + within
        while True:
            message: dict[str, Any] = json.loads(
                await asyncio.wait_for(self.ws.recv(), max(0.0, deadline - time.monotonic()))
            )
            if message["type"] in ("ka", "ping", "pong"):
                continue
            if message["type"] == "data":
                message["type"] = "next"
            return message

    async def subscribe(self, id: str, query: str, **variables: Any) -> None:
        kind = "start" if self.legacy else "subscribe"
        payload = {"query": query, "variables": variables}
        await self.send({"id": id, "type": kind, "payload": payload})


@pytest.fixture(params=[TRANSPORT_WS, LEGACY_WS])
def protocol(request: pytest.FixtureRequest) -> str:
    """Each GraphQL test runs over both GraphQL-over-WebSocket protocols."""
    return str(request.param)


async def graphql_holding(
    server: BrokerServer, client: httpx.AsyncClient, protocol: str
) -> GraphQLSocket:
    """Ursula's GraphQL socket, subscribed to ``jobs`` as ``"1"`` and holding one message."""
    await make_queue(client)
    token = await make_user(client, server, "ursula", CONSUMER)
    socket = await GraphQLSocket.open(server, protocol, token)
    await socket.subscribe("1", MESSAGES, q="jobs")
    [message_id] = await publish_rest(client, ["job"])
    delivered = await socket.next(5000 * MS)
    assert delivered["payload"]["data"]["messages"]["messageId"] == message_id, delivered
    return socket


async def test_permission_removal_ends_the_graphql_subscription_with_revoked(
    server: BrokerServer, client: httpx.AsyncClient, protocol: str
) -> None:
    """Removing consume ends a messages subscription within 1 s: error revoked, then complete."""
    socket = await graphql_holding(server, client, protocol)
    async with socket.ws:
        await set_permissions(client, PUBLISHER)
        error = await socket.next(REVOKED_WITHIN)
        complete = await socket.next(5000 * MS)
    assert (error["type"], error["id"]) == ("next", "1"), error
    [detail] = error["payload"]["errors"]
    assert detail["extensions"]["code"] == "revoked", detail
    assert complete == {"type": "complete", "id": "1"}
    await eventually(client, pending=1, processing=0)


async def test_a_disabled_user_gets_revoked_and_its_graphql_socket_closes(
    server: BrokerServer, client: httpx.AsyncClient, protocol: str
) -> None:
    """Disabling the user ends its subscription with revoked, then closes the socket (4403)."""
    socket = await graphql_holding(server, client, protocol)
    async with socket.ws:
        assert (await client.patch("/users/ursula", json={"disabled": True})).status_code == 200
        error = await socket.next(REVOKED_WITHIN)
        complete = await socket.next(5000 * MS)
        assert await closed_within(socket.ws, 5000 * MS) == (4403, "revoked: user disabled")
    assert error["payload"]["errors"][0]["extensions"]["code"] == "revoked", error
    assert complete == {"type": "complete", "id": "1"}
    await eventually(client, pending=1, processing=0)


async def test_permission_removal_ends_a_queue_events_subscription_with_revoked(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A queueEvents subscription on a queue the user can no longer see ends with revoked."""
    await make_queue(client)
    token = await make_user(client, server, "ursula", CONSUMER)
    socket = await GraphQLSocket.open(server, TRANSPORT_WS, token)
    async with socket.ws:
        events = 'subscription { queueEvents(queue: "jobs") { type queue } }'
        await socket.subscribe("1", events)
        await publish_rest(client, ["job"])
        published = await socket.next(5000 * MS)
        assert published["payload"]["data"]["queueEvents"]["type"] == "published", published
        await set_permissions(client, [{"pattern": "other", "actions": ["consume"]}])
        error = await socket.next(REVOKED_WITHIN)
        complete = await socket.next(5000 * MS)
    assert error["payload"]["errors"][0]["extensions"]["code"] == "revoked", error
    assert complete == {"type": "complete", "id": "1"}


async def test_graphql_ack_over_a_revoked_connection_is_refused(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """After a permission removal, an ack mutation over the same socket is refused."""
    socket = await graphql_holding(server, client, TRANSPORT_WS)
    async with socket.ws:
        pulled = await client.get("/queues/jobs")
        assert pulled.json()["processing"] == 1
        await set_permissions(client, PUBLISHER)
        assert (await socket.next(REVOKED_WITHIN))["payload"]["errors"]
        assert (await socket.next(5000 * MS))["type"] == "complete"
        # The message went back and is leased again, to the admin over REST.
        admin_pull = await client.get("/queues/jobs/messages/consume", params={"max": 1})
        [message] = admin_pull.json()["messages"]
        ack = "mutation($id: Long!) { ack(messageId: $id) { status } }"
        await socket.send(
            {
                "id": "2",
                "type": "subscribe",
                "payload": {"query": ack, "variables": {"id": message["message_id"]}},
            }
        )
        answer = await socket.next(5000 * MS)
    assert answer["payload"]["errors"], answer
    await eventually(client, processing=1, processed=0)


async def test_login_after_revocation_works_again(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A user whose password changed logs in with the new one and subscribes again."""
    await make_queue(client)
    await make_user(client, server, "ursula", CONSUMER)
    response = await client.patch("/users/ursula", json={"password": "a-new-password"})
    assert response.status_code == 200
    token = (await login(server.url, "ursula", "a-new-password"))["access_token"]
    async with await open_ws(server, token) as ws:
        assert await subscribe(ws) == 1

"""The WebSocket endpoint end to end: a real server and real `websockets` clients."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import MS, make_user
from transports.ws import registry_of

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer


def overrides(**settings: Any) -> pytest.MarkDecorator:
    """Run the test against a server with these settings."""
    return pytest.mark.parametrize("settings_overrides", [settings], ids=["settings"])


async def open_ws(
    server: BrokerServer,
    token: str | None,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    **options: Any,
) -> ClientConnection:
    """A raw WebSocket to ``/ws``, authenticated by header when ``token`` is given."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    options.setdefault("compression", None)
    options.setdefault("open_timeout", 5000 * MS)
    return await connect(f"{server.ws_url}/ws{query}", additional_headers=all_headers, **options)


async def send(ws: ClientConnection, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, decoded."""
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5000 * MS))
    return frame


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 5000 * MS)
    return ws.close_code, ws.close_reason


async def subscribe(ws: ClientConnection, queue: str = "jobs", prefetch: int = 10) -> int:
    """Subscribe; the subscription id."""
    await send(ws, op="subscribe", queue=queue, prefetch=prefetch, ref="s")
    reply = await recv(ws)
    assert reply["op"] == "subscribed", reply
    return int(reply["subscription"])


async def make_queue(client: httpx.AsyncClient, name: str = "jobs", **options: Any) -> None:
    response = await client.post("/queues", json={"name": name, **options})
    assert response.status_code == 201, response.text


async def publish_rest(
    client: httpx.AsyncClient, contents: list[Any], queue: str = "jobs"
) -> list[int]:
    response = await client.post(
        f"/queues/{queue}/messages/batch", json={"messages": [{"content": c} for c in contents]}
    )
    assert response.status_code == 201, response.text
    return [m["message_id"] for m in response.json()["messages"]]


async def queue_info(client: httpx.AsyncClient, queue: str = "jobs") -> dict[str, Any]:
    info: dict[str, Any] = (await client.get(f"/queues/{queue}")).json()
    return info


async def eventually(client: httpx.AsyncClient, **expected: int) -> dict[str, Any]:
    """Poll the queue until its counts match ``expected``."""
    deadline = time.monotonic() + 5000 * MS
    while True:
        info = await queue_info(client)
        if all(info[key] == value for key, value in expected.items()):
            return info
        assert time.monotonic() < deadline, info
        await asyncio.sleep(10 * MS)


# -- subscribe, deliver, settle -------------------------------------------------------


async def test_published_message_is_pushed_with_its_fields(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A message published to a subscribed queue arrives as a complete deliver frame."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        subscription = await subscribe(ws)
        response = await client.post(
            "/queues/jobs/messages", json={"content": {"order": 7}, "headers": {"k": "v"}}
        )
        frame = await recv(ws)
    assert frame == {
        "op": "deliver",
        "subscription": subscription,
        "queue": "jobs",
        "tag": frame["tag"],
        "message_id": response.json()["message_id"],
        "content": {"order": 7},
        "headers": {"k": "v"},
        "attempt": 1,
        "redelivered": False,
    }


async def test_subscribed_comes_before_backlog_deliveries(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Subscribing to a queue with a backlog answers subscribed before the first deliver."""
    await make_queue(client)
    await publish_rest(client, ["a", "b"])
    async with await open_ws(server, admin_token) as ws:
        await send(ws, op="subscribe", queue="jobs", prefetch=5, ref=1)
        frames = [await recv(ws) for _ in range(3)]
    assert [f["op"] for f in frames] == ["subscribed", "deliver", "deliver"]
    assert frames[0]["ref"] == 1


async def test_competing_consumers_share_round_robin(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Two consumers of one queue get alternate messages of a burst."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as a, await open_ws(server, admin_token) as b:
        await subscribe(a, prefetch=10)
        await subscribe(b, prefetch=10)
        await publish_rest(client, list(range(10)))
        got_a = [(await recv(a))["content"] for _ in range(5)]
        got_b = [(await recv(b))["content"] for _ in range(5)]
    assert sorted(got_a + got_b) == list(range(10))
    assert got_a == [0, 2, 4, 6, 8]


async def test_prefetch_is_never_exceeded_under_load(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A consumer acking one at a time never holds more than its prefetch."""
    await make_queue(client)
    await publish_rest(client, list(range(60)))
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws, prefetch=5)
        held: list[int] = []
        received = acked = 0
        while received < 60:
            frame = await recv(ws)
            assert frame["op"] == "deliver", frame
            received += 1
            held.append(frame["tag"])
            assert received - acked <= 5
            if len(held) == 5 or received == 60:
                # Return two credits at a time (all at the end).
                settle, held = (held, []) if received == 60 else (held[:2], held[2:])
                await send(ws, op="ack", tags=settle)
                acked += len(settle)
        await eventually(client, processed=60, processing=0)


async def test_ack_settles_many_tags_in_one_frame(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """One ack frame settles every tag it lists."""
    await make_queue(client)
    await publish_rest(client, list(range(4)))
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws)
        tags = [(await recv(ws))["tag"] for _ in range(4)]
        await send(ws, op="ack", tags=tags)
        await eventually(client, processed=4, processing=0, pending=0)


async def test_nack_requeue_redelivers_marked(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A nacked delivery comes back with attempt 2 and redelivered true."""
    await make_queue(client)
    [message_id] = await publish_rest(client, ["x"])
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws)
        first = await recv(ws)
        await send(ws, op="nack", tags=[first["tag"]], requeue=True)
        again = await recv(ws)
    assert again["message_id"] == message_id
    assert again["tag"] != first["tag"]
    assert (again["attempt"], again["redelivered"]) == (2, True)


async def test_nack_without_requeue_fails_the_message(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A delivery nacked without requeue ends failed."""
    await make_queue(client)
    await publish_rest(client, ["x"])
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws)
        frame = await recv(ws)
        await send(ws, op="nack", tags=[frame["tag"]], requeue=False)
        await eventually(client, failed=1, processing=0, pending=0)


async def test_closing_the_socket_requeues_held_messages(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """What a closed connection held goes to the next consumer, marked redelivered."""
    await make_queue(client)
    await publish_rest(client, ["a", "b"])
    async with await open_ws(server, admin_token) as first:
        await subscribe(first)
        held = {(await recv(first))["message_id"] for _ in range(2)}
    async with await open_ws(server, admin_token) as second:
        await subscribe(second)
        again = [await recv(second) for _ in range(2)]
    assert {f["message_id"] for f in again} == held
    assert all(f["redelivered"] and f["attempt"] == 2 for f in again)


async def test_unsubscribe_requeues_held_messages(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Unsubscribing answers how many messages went back, and they are pending again."""
    await make_queue(client)
    await publish_rest(client, ["a", "b", "c"])
    async with await open_ws(server, admin_token) as ws:
        subscription = await subscribe(ws, prefetch=2)
        [await recv(ws) for _ in range(2)]
        await send(ws, op="unsubscribe", subscription=subscription, ref="u")
        reply = await recv(ws)
        assert reply == {
            "op": "unsubscribed",
            "subscription": subscription,
            "requeued": 2,
            "ref": "u",
        }
        await eventually(client, pending=3, processing=0)


async def test_deleting_the_queue_ends_its_subscriptions(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """When a subscribed queue is deleted, the client gets an unsolicited unsubscribed."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        subscription = await subscribe(ws)
        assert (await client.delete("/queues/jobs")).status_code == 204
        frame = await recv(ws)
    assert frame == {
        "op": "unsubscribed",
        "subscription": subscription,
        "requeued": 0,
        "reason": "queue deleted",
    }


async def test_ack_of_another_connections_tag_is_refused(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A tag delivered to one connection can't be acked by another."""
    await make_queue(client)
    await publish_rest(client, ["x"])
    async with (
        await open_ws(server, admin_token) as owner,
        await open_ws(server, admin_token) as other,
    ):
        await subscribe(owner)
        tag = (await recv(owner))["tag"]
        await send(other, op="ack", tags=[tag], ref=9)
        error = await recv(other)
        assert (error["op"], error["code"], error["ref"], error["tags"]) == (
            "error",
            "unknown_tag",
            9,
            [tag],
        )
        assert (await queue_info(client))["processing"] == 1


async def test_ack_of_a_delivery_requeued_since_is_refused(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """After a lease expiry redelivers a message, the old tag no longer settles it."""
    await make_queue(client, lease=0.2)
    await publish_rest(client, ["x"])
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws, prefetch=1)
        first = await recv(ws)
        again = await recv(ws)  # the lease expired: delivered again, new tag
        assert (again["message_id"], again["attempt"]) == (first["message_id"], 2)
        await send(ws, op="ack", tags=[first["tag"]], ref="old")
        assert (await recv(ws))["code"] == "unknown_tag"
        await send(ws, op="ack", tags=[again["tag"]])
        await eventually(client, processed=1, processing=0)


# -- publish ----------------------------------------------------------------------------


async def test_pipelined_publishes_are_all_confirmed(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Many publishes sent without waiting each get a confirm with a distinct message id."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        for ref in range(300):
            await send(ws, op="publish", queue="jobs", content={"n": ref}, ref=ref)
        confirms = [await recv(ws) for _ in range(300)]
    assert {c["op"] for c in confirms} == {"confirm"}
    assert sorted(c["ref"] for c in confirms) == list(range(300))
    assert len({c["message_id"] for c in confirms}) == 300
    assert (await queue_info(client))["pending"] == 300


@overrides(ws_send_buffer_messages=4)
async def test_inflight_publishes_are_bounded(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A connection never has more unconfirmed publishes than its limit; all get confirmed."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        for ref in range(100):
            await send(ws, op="publish", queue="jobs", content=ref, ref=ref)
        confirms = [await recv(ws) for _ in range(100)]
        [session] = registry_of(server.ctx).sessions
        assert 1 <= session.peak_inflight <= 4
    assert sorted(c["ref"] for c in confirms) == list(range(100))


async def test_publish_without_permission_is_forbidden(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Publishing to a queue the user may only consume from answers forbidden."""
    await make_queue(client)
    token = await make_user(client, server, "reader", [{"pattern": "jobs", "actions": ["consume"]}])
    async with await open_ws(server, token) as ws:
        await send(ws, op="publish", queue="jobs", content=1, ref="p")
        error = await recv(ws)
    assert (error["code"], error["ref"]) == ("forbidden", "p")
    assert (await queue_info(client))["pending"] == 0


@overrides(rate_publish_per_s=1)
async def test_publish_over_rate_gets_errors_then_a_close(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Publishes over the user's rate get rate_limited errors; repeated ones close with 1008."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        for ref in range(150):
            await send(ws, op="publish", queue="jobs", content=ref, ref=ref)
        codes = []
        with pytest.raises(ConnectionClosed):
            while True:
                frame = await recv(ws)
                codes.append(frame.get("code", frame["op"]))
        assert ws.close_code == 1008
    assert codes.count("confirm") == 1
    assert set(codes) == {"confirm", "rate_limited"}
    assert len(codes) < 150  # closed before the rest were read


# -- bad frames -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "malformed"),
        ('{"queue": "jobs"}', "invalid"),
        ('{"op": "dance", "ref": 3}', "unknown_op"),
        ('{"op": "subscribe", "queue": "jobs", "prefetch": "ten"}', "invalid"),
        ('{"op": "ack", "tags": "1"}', "invalid"),
        ('{"op": "ack", "tags": [424242]}', "unknown_tag"),
        ('{"op": "nack", "tags": [7], "requeue": true}', "unknown_tag"),
        ('{"op": "touch", "tags": [7], "lease": 10}', "unknown_tag"),
        ('{"op": "unsubscribe", "subscription": 5}', "subscription_not_found"),
        ('{"op": "subscribe", "queue": "nope"}', "queue_not_found"),
        ('{"op": "publish", "queue": "nope", "content": 1, "ref": 1}', "queue_not_found"),
        ('{"op": "publish", "queue": "jobs", "content": 1}', "invalid"),
    ],
    ids=[
        "not-json",
        "no-op",
        "unknown-op",
        "wrong-type",
        "tags-not-a-list",
        "unknown-tag",
        "nack-unknown-tag",
        "touch-unknown-tag",
        "unknown-subscription",
        "unknown-queue",
        "publish-unknown-queue",
        "publish-without-ref",
    ],
)
async def test_bad_frame_gets_an_error_and_the_connection_stays_usable(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient, frame: str, code: str
) -> None:
    """A bad frame is answered with an error frame; the next good frame still works."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        await ws.send(frame)
        error = await recv(ws)
        assert (error["op"], error["code"]) == ("error", code), error
        assert error["detail"]
        await subscribe(ws)


async def test_error_echoes_the_ref_of_an_unknown_op(
    server: BrokerServer, admin_token: str
) -> None:
    """The error for a frame that didn't decode still carries its ref."""
    async with await open_ws(server, admin_token) as ws:
        await send(ws, op="dance", ref="r-1")
        assert (await recv(ws))["ref"] == "r-1"


async def test_subscribe_to_invisible_queue_answers_like_a_missing_one(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A queue the user has no permission on is reported as not found."""
    await make_queue(client, "secret")
    token = await make_user(
        client, server, "outsider", [{"pattern": "other", "actions": ["consume"]}]
    )
    async with await open_ws(server, token) as ws:
        await send(ws, op="subscribe", queue="secret", ref=1)
        hidden = await recv(ws)
        await send(ws, op="subscribe", queue="absent", ref=2)
        missing = await recv(ws)
    assert hidden["code"] == missing["code"] == "queue_not_found"


async def test_subscribe_without_consume_permission_is_forbidden(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A visible queue without the consume permission answers forbidden."""
    await make_queue(client)
    token = await make_user(client, server, "writer", [{"pattern": "jobs", "actions": ["publish"]}])
    async with await open_ws(server, token) as ws:
        await send(ws, op="subscribe", queue="jobs", ref=1)
        assert (await recv(ws))["code"] == "forbidden"


@overrides(max_consumers_per_connection=2)
async def test_subscriptions_per_connection_are_limited(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A connection can't hold more subscriptions than the limit."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        await subscribe(ws)
        await subscribe(ws)
        await send(ws, op="subscribe", queue="jobs", ref=3)
        assert (await recv(ws))["code"] == "too_many_subscriptions"


async def test_frame_over_the_size_limit_closes_1009(
    server: BrokerServer, admin_token: str
) -> None:
    """A frame larger than ws_max_frame_bytes closes the connection with 1009."""
    async with await open_ws(server, admin_token, max_size=None) as ws:
        big = server.settings.ws_max_frame_bytes + 1
        await ws.send(json.dumps({"op": "publish", "queue": "jobs", "content": "x" * big}))
        code, _ = await closed_with(ws)
    assert code == 1009


async def test_msgpack_subprotocol_round_trips(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """With the msgpack subprotocol, frames and contents are MessagePack both ways."""
    await make_queue(client)
    async with await open_ws(server, admin_token, subprotocols=["msgpack"]) as ws:
        assert ws.subprotocol == "msgpack"
        await ws.send(msgspec.msgpack.encode({"op": "subscribe", "queue": "jobs", "ref": 1}))
        assert msgspec.msgpack.decode(await ws.recv(decode=False))["op"] == "subscribed"
        await ws.send(
            msgspec.msgpack.encode(
                {"op": "publish", "queue": "jobs", "content": [1, "a"], "ref": 2}
            )
        )
        frames = [msgspec.msgpack.decode(await ws.recv(decode=False)) for _ in range(2)]
    by_op = {f["op"]: f for f in frames}
    assert by_op["confirm"]["ref"] == 2
    assert by_op["deliver"]["content"] == [1, "a"]
    stored = (await client.get("/queues/jobs/messages")).json()["messages"]
    assert stored[0]["content"] == [1, "a"]


# -- handshake and authentication ---------------------------------------------------------


async def test_token_in_url_is_refused(server: BrokerServer, admin_token: str) -> None:
    """A token in the query string is refused before the upgrade."""
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(server, None, query=f"?token={admin_token}")
    assert refused.value.response.status_code == 400


async def test_invalid_header_token_is_refused(server: BrokerServer) -> None:
    """A bad bearer token in the Authorization header answers 401 before the upgrade."""
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(server, "not-a-token")
    assert refused.value.response.status_code == 401


async def test_auth_frame_authenticates(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Without a header, a first auth frame authenticates the connection."""
    await make_queue(client)
    async with await open_ws(server, None) as ws:
        await send(ws, op="auth", token=admin_token, ref="a")
        reply = await recv(ws)
        assert (reply["op"], reply["username"], reply["ref"]) == ("authenticated", "admin", "a")
        assert reply["expires_in"] > 0
        await subscribe(ws)


async def test_first_frame_other_than_auth_closes_1008(server: BrokerServer) -> None:
    """Without a header, any first frame but auth closes the connection with 1008."""
    async with await open_ws(server, None) as ws:
        await send(ws, op="subscribe", queue="jobs")
        code, reason = await closed_with(ws)
    assert code == 1008
    assert reason and "auth" in reason


async def test_auth_frame_with_bad_token_closes_1008(server: BrokerServer) -> None:
    """An auth frame with an invalid token closes the connection with 1008."""
    async with await open_ws(server, None) as ws:
        await send(ws, op="auth", token="bad")
        code, _ = await closed_with(ws)
    assert code == 1008


@overrides(ws_auth_timeout_s=0.2)
async def test_missing_auth_frame_times_out(server: BrokerServer) -> None:
    """A connection that doesn't authenticate in time is closed with 1008."""
    async with await open_ws(server, None) as ws:
        code, reason = await closed_with(ws)
    assert code == 1008
    assert reason and "timed out" in reason


def short_lived_token(server: BrokerServer, seconds: float) -> str:
    """An admin access token expiring ``seconds`` from now, give or take half a second."""
    ttl = server.settings.access_token_ttl_s
    issued = server.ctx.tokens.issue_pair("admin", now=time.time() - ttl + seconds + 0.5)
    return str(issued.pair.access_token)


async def test_expired_token_closes_4001(server: BrokerServer) -> None:
    """A connection whose token expires is closed with 4001 and a reason."""
    async with await open_ws(server, short_lived_token(server, 0.5)) as ws:
        code, reason = await closed_with(ws)
    assert code == 4001
    assert reason and "expired" in reason


async def test_auth_frame_renews_an_expiring_token(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Re-authenticating with a fresh token keeps the connection past the old expiry."""
    await make_queue(client)
    async with await open_ws(server, short_lived_token(server, 1.0)) as ws:
        await send(ws, op="auth", token=admin_token, ref=1)
        assert (await recv(ws))["op"] == "authenticated"
        await asyncio.sleep(1700 * MS)  # past the first token's expiry
        await subscribe(ws)


async def test_auth_frame_cannot_switch_user(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Re-authenticating as another user is refused; the connection stays the first user's."""
    token = await make_user(client, server, "eve", [])
    async with await open_ws(server, admin_token) as ws:
        await send(ws, op="auth", token=token, ref=1)
        assert (await recv(ws))["code"] == "forbidden"


async def test_cross_origin_upgrade_is_refused(server: BrokerServer, admin_token: str) -> None:
    """A browser upgrade from another origin answers 403 before accepting."""
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(server, admin_token, origin="https://evil.example")
    assert refused.value.response.status_code == 403


async def test_same_origin_upgrade_is_accepted(server: BrokerServer, admin_token: str) -> None:
    """With no allowed_origins, an Origin equal to the Host is accepted."""
    origin = f"http://127.0.0.1:{server.port}"
    async with await open_ws(server, admin_token, origin=origin) as ws:
        await send(ws, op="ack", tags=[1])
        assert (await recv(ws))["code"] == "unknown_tag"


@overrides(allowed_origins=("https://app.example",))
async def test_allowed_origin_upgrade_is_accepted(server: BrokerServer, admin_token: str) -> None:
    """An Origin listed in allowed_origins may open a WebSocket."""
    async with await open_ws(server, admin_token, origin="https://app.example") as ws:
        await send(ws, op="ack", tags=[1])
        assert (await recv(ws))["code"] == "unknown_tag"


@overrides(max_connections_per_user=1)
async def test_connections_per_user_are_limited(server: BrokerServer, admin_token: str) -> None:
    """A user over its connection limit is refused with 429 before the upgrade."""
    async with await open_ws(server, admin_token):
        with pytest.raises(InvalidStatus) as refused:
            await open_ws(server, admin_token)
    assert refused.value.response.status_code == 429


async def test_revoked_token_closes_the_connection(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Once the user's tokens are revoked (password change), the connection closes 4003."""
    await make_queue(client)
    token = await make_user(client, server, "carol", [{"pattern": "*", "actions": ["publish"]}])
    async with await open_ws(server, token) as ws:
        response = await client.patch("/users/carol", json={"password": "another-password"})
        assert response.status_code == 200, response.text
        code, reason = await closed_with(ws)
    assert (code, reason) == (4003, "revoked: password changed")


# -- slow and silent consumers ------------------------------------------------------------


async def test_a_consumer_that_stops_reading_holds_only_its_prefetch(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A consumer that stops reading gets no more than its prefetch; the rest stays pending."""
    await make_queue(client)
    ws = await open_ws(server, admin_token)
    try:
        await subscribe(ws, prefetch=20)
        ws.transport.pause_reading()
        await publish_rest(client, ["x" * 1000] * 500)
        await eventually(client, processing=20, pending=480)
        [session] = registry_of(server.ctx).sessions
        assert session.buffered <= 20
    finally:
        ws.transport.abort()
        await ws.wait_closed()


@overrides(ws_heartbeat_s=0.1, ws_heartbeat_timeout_s=0.2)
async def test_missed_heartbeat_requeues_held_messages(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A client that stops answering pings is dropped and its messages are redelivered."""
    await make_queue(client)
    await publish_rest(client, ["a", "b"])
    silent = await open_ws(server, admin_token, ping_interval=None)
    try:
        await subscribe(silent)
        held = {(await recv(silent))["message_id"] for _ in range(2)}
        silent.transport.pause_reading()  # pings go unanswered from now on
        async with await open_ws(server, admin_token, ping_interval=None) as other:
            await subscribe(other)
            again = [await recv(other) for _ in range(2)]
    finally:
        silent.transport.abort()
        await silent.wait_closed()
    assert {f["message_id"] for f in again} == held
    assert all(f["redelivered"] for f in again)

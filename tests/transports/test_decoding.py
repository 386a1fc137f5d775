"""Every decode site end to end: invalid UTF-8, lone surrogates, deep nesting, unknown fields.

DESIGN.md, "Trust": strings in every body, frame and GraphQL variable are
valid UTF-8 (400 ``invalid_encoding``), JSON nests at most ``max_json_depth``
levels (400 ``too_deep``, with or without a token) and an unknown field is
422 ``unknown_field`` naming it. Over ``/ws`` each is an ``error`` frame and
the connection stays up.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
from loguru import logger
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import MS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import BrokerServer

INVALID_UTF8 = [
    pytest.param(b"\xff\xfe", id="invalid"),
    pytest.param(b"\xc0\xaf", id="overlong"),
    pytest.param(b"\xed\xa0\x80", id="encoded-surrogate"),
]
LONE_SURROGATES = [
    pytest.param(rb"\ud800", id="high"),
    pytest.param(rb"\udc00", id="low"),
    pytest.param(rb"\ud800\u0041", id="high-then-letter"),
    pytest.param(rb"x\udfff\ud800", id="reversed-pair"),
]
DEPTH = 128
"""The default ``max_json_depth``."""


def nested(depth: int) -> bytes:
    """A JSON value nested ``depth`` levels deep (arrays and objects, alternating)."""
    value = b"1"
    for level in range(depth):
        value = b"[" + value + b"]" if level % 2 else b'{"k":' + value + b"}"
    return value


def publish_body(content: bytes) -> bytes:
    return b'{"content": ' + content + b"}"


async def make_queue(client: httpx.AsyncClient, name: str = "jobs") -> None:
    response = await client.post("/queues", json={"name": name})
    assert response.status_code == 201, response.text


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert (response.status_code, response.json().get("code")) == (status, code), response.text
    body: dict[str, Any] = response.json()
    return body


async def post_raw(client: httpx.AsyncClient, path: str, body: bytes) -> httpx.Response:
    return await client.post(path, content=body, headers={"content-type": "application/json"})


async def pending(client: httpx.AsyncClient, queue: str = "jobs") -> int:
    count: int = (await client.get(f"/queues/{queue}")).json()["pending"]
    return count


# -- REST: invalid encoding ---------------------------------------------------------------


@pytest.mark.parametrize("bad", INVALID_UTF8)
async def test_publish_with_invalid_utf8_is_400_and_stores_nothing(
    client: httpx.AsyncClient, bad: bytes
) -> None:
    """A publish whose content holds invalid UTF-8 is 400 invalid_encoding and stores nothing."""
    await make_queue(client)
    response = await post_raw(client, "/queues/jobs/messages", publish_body(b'"' + bad + b'"'))
    assert_error(response, 400, "invalid_encoding")
    assert await pending(client) == 0


@pytest.mark.parametrize("bad", LONE_SURROGATES)
async def test_publish_with_an_escaped_lone_surrogate_is_400(
    client: httpx.AsyncClient, bad: bytes
) -> None:
    """A ``\\ud800`` escape without its pair is 400 invalid_encoding."""
    await make_queue(client)
    response = await post_raw(client, "/queues/jobs/messages", publish_body(b'"' + bad + b'"'))
    assert_error(response, 400, "invalid_encoding")


async def test_publish_with_a_surrogate_pair_or_escaped_backslash_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    """A surrogate pair escape and an escaped backslash before ``ud800`` are valid content."""
    await make_queue(client)
    for content in (rb'"\ud83d\ude00"', rb'"\\ud800"', rb'{"\ud83d\ude00": "\\\\ud800"}'):
        response = await post_raw(client, "/queues/jobs/messages", publish_body(content))
        assert response.status_code == 201, (content, response.text)
    response = await client.get("/queues/jobs/messages")
    contents = [message["content"] for message in response.json()["messages"]]
    assert contents == ["\U0001f600", "\\ud800", {"\U0001f600": "\\\\ud800"}]


async def test_invalid_utf8_in_a_header_is_400(client: httpx.AsyncClient) -> None:
    """Invalid UTF-8 outside the content (a header value) is 400 invalid_encoding too."""
    await make_queue(client)
    body = b'{"content": 1, "headers": {"k": "\xff"}}'
    assert_error(await post_raw(client, "/queues/jobs/messages", body), 400, "invalid_encoding")


async def test_batch_publish_with_invalid_utf8_is_400_and_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    """One bad message in a batch refuses the batch (400 invalid_encoding)."""
    await make_queue(client)
    body = b'{"messages": [{"content": 1}, {"content": "\xff"}]}'
    assert_error(
        await post_raw(client, "/queues/jobs/messages/batch", body), 400, "invalid_encoding"
    )
    assert await pending(client) == 0


async def test_fanout_publish_with_a_lone_surrogate_is_400(client: httpx.AsyncClient) -> None:
    """``POST /publish`` refuses a lone surrogate (400 invalid_encoding)."""
    await make_queue(client)
    body = rb'{"queues": ["jobs"], "content": "\ud800"}'
    assert_error(await post_raw(client, "/publish", body), 400, "invalid_encoding")
    assert await pending(client) == 0


async def test_create_queue_with_invalid_utf8_is_400(client: httpx.AsyncClient) -> None:
    """A Litestar-decoded body (``POST /queues``) with invalid UTF-8 is 400 invalid_encoding."""
    response = await post_raw(client, "/queues", b'{"name": "q\xff"}')
    assert_error(response, 400, "invalid_encoding")


async def test_create_user_with_a_lone_surrogate_is_400(client: httpx.AsyncClient) -> None:
    """``POST /users`` with a lone surrogate in the password is 400 invalid_encoding."""
    body = rb'{"username": "bob", "password": "secret-\udfff-password", "permissions": []}'
    assert_error(await post_raw(client, "/users", body), 400, "invalid_encoding")


async def test_login_with_invalid_utf8_is_400_without_a_token(server: BrokerServer) -> None:
    """``POST /auth/token`` with invalid UTF-8 is 400 invalid_encoding (no token needed)."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        body = b'{"username": "admin\xc0\xaf", "password": "x"}'
        assert_error(await post_raw(anonymous, "/auth/token", body), 400, "invalid_encoding")


# -- REST: depth ---------------------------------------------------------------------------


async def test_content_nested_to_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    """A body nested exactly ``max_json_depth`` levels (content included) is published."""
    await make_queue(client)
    response = await post_raw(client, "/queues/jobs/messages", publish_body(nested(DEPTH - 1)))
    assert response.status_code == 201, response.text


async def test_content_nested_past_the_limit_is_400_too_deep(client: httpx.AsyncClient) -> None:
    """One level past ``max_json_depth`` is 400 too_deep, and the detail names the limit."""
    await make_queue(client)
    response = await post_raw(client, "/queues/jobs/messages", publish_body(nested(DEPTH)))
    body = assert_error(response, 400, "too_deep")
    assert str(DEPTH) in body["detail"]


async def test_brackets_inside_strings_do_not_count_as_depth(client: httpx.AsyncClient) -> None:
    """Brackets inside strings are text, not nesting: such a body is published."""
    await make_queue(client)
    content = b'"' + b"[{" * 3000 + b'\\"' + b"]}" * 3000 + b'"'
    response = await post_raw(client, "/queues/jobs/messages", publish_body(content))
    assert response.status_code == 201, response.text


JSON_ROUTES = [
    pytest.param("POST", "/queues/jobs/messages", id="publish"),
    pytest.param("POST", "/queues/jobs/messages/batch", id="batch"),
    pytest.param("POST", "/publish", id="fanout"),
    pytest.param("POST", "/queues", id="create-queue"),
    pytest.param("PATCH", "/queues/jobs", id="update-queue"),
    pytest.param("POST", "/users", id="create-user"),
    pytest.param("PATCH", "/users/admin", id="update-user"),
    pytest.param("POST", "/messages/ack", id="ack"),
    pytest.param("POST", "/messages/nack", id="nack"),
    pytest.param("POST", "/messages/1/touch", id="touch"),
    pytest.param("POST", "/auth/refresh", id="refresh"),
    pytest.param("POST", "/auth/logout", id="logout"),
    pytest.param("POST", "/graphql", id="graphql"),
    pytest.param("POST", "/topics", id="create-topic"),
    pytest.param("POST", "/topics/t/bindings", id="bind"),
    pytest.param("DELETE", "/topics/t/bindings", id="unbind"),
    pytest.param("POST", "/topics/t/publish", id="topic-publish"),
]


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
async def test_deep_json_is_400_too_deep_on_every_json_route(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """A body nested 3,000 deep is 400 too_deep on every JSON route, never a 500."""
    await make_queue(client)
    body = b'{"x": ' + nested(3000) + b"}"
    response = await client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "too_deep")


async def test_deep_login_is_400_too_deep_without_a_token(server: BrokerServer) -> None:
    """``POST /auth/token`` nested 3,000 deep is 400 too_deep (no token needed)."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        body = b'{"username": ' + nested(3000) + b"}"
        assert_error(await post_raw(anonymous, "/auth/token", body), 400, "too_deep")


@pytest.fixture
def error_records() -> Iterator[list[str]]:
    """Messages of the ERROR (and worse) records logged while the test runs."""
    records: list[str] = []
    sink = logger.add(lambda message: records.append(str(message)), level="ERROR")
    yield records
    logger.remove(sink)


async def test_bad_input_logs_no_error(
    server: BrokerServer, client: httpx.AsyncClient, error_records: list[str]
) -> None:
    """Deep and badly encoded bodies write no ERROR record and leave ``last_error`` alone."""
    await make_queue(client)
    before = (await client.get("/stats")).json()["last_error"]
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        for _ in range(20):
            await post_raw(anonymous, "/auth/token", nested(3000))
            await post_raw(client, "/queues/jobs/messages", publish_body(nested(3000)))
            await post_raw(client, "/queues/jobs/messages", publish_body(b'"\xff"'))
            await post_raw(client, "/queues", nested(3000))
    assert error_records == []
    assert (await client.get("/stats")).json()["last_error"] == before


# -- REST: unknown fields -------------------------------------------------------------------


async def test_create_queue_with_an_unknown_field_is_422_naming_it(
    client: httpx.AsyncClient,
) -> None:
    """``max_attempt`` (a typo of ``max_attempts``) is 422 unknown_field naming it; no queue."""
    response = await client.post("/queues", json={"name": "q", "max_attempt": 5})
    body = assert_error(response, 422, "unknown_field")
    assert "max_attempt" in body["detail"]
    assert (await client.get("/queues/q")).status_code == 404


async def test_publish_with_an_unknown_field_is_422_naming_it(client: httpx.AsyncClient) -> None:
    """``priorty`` on a publish is 422 unknown_field naming it, not silently dropped."""
    await make_queue(client)
    response = await client.post("/queues/jobs/messages", json={"content": 1, "priorty": 5})
    body = assert_error(response, 422, "unknown_field")
    assert "priorty" in body["detail"]
    assert await pending(client) == 0


async def test_unknown_field_in_a_batch_message_is_422_naming_it(
    client: httpx.AsyncClient,
) -> None:
    """An unknown field inside a batch's message is 422 unknown_field naming it and where."""
    await make_queue(client)
    body = {"messages": [{"content": 1}, {"content": 2, "ttl": 5}]}
    response = await client.post("/queues/jobs/messages/batch", json=body)
    detail = assert_error(response, 422, "unknown_field")["detail"]
    assert "ttl" in detail and "messages[1]" in detail


async def test_unknown_field_in_update_user_is_422_naming_it(client: httpx.AsyncClient) -> None:
    """``PATCH /users/{name}`` with ``is_admin`` (not ``admin``) is 422 unknown_field."""
    response = await client.patch("/users/admin", json={"is_admin": False})
    assert "is_admin" in assert_error(response, 422, "unknown_field")["detail"]


async def test_unknown_field_in_a_permission_is_422_naming_it(client: httpx.AsyncClient) -> None:
    """A typo inside one of a new user's permissions is 422 unknown_field; no user is made."""
    permission = {"pattern": "jobs", "actions": ["consume"], "action": ["publish"]}
    body = {"username": "typo", "password": "typo-password-1", "permissions": [permission]}
    response = await client.post("/users", json=body)
    assert "action" in assert_error(response, 422, "unknown_field")["detail"]
    assert (await client.get("/users/typo")).status_code == 404


async def test_unknown_field_in_login_is_422_naming_it(server: BrokerServer) -> None:
    """``POST /auth/token`` with ``user`` (not ``username``) is 422 unknown_field."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        body = {"username": "admin", "password": "x", "user": "admin"}
        response = await anonymous.post("/auth/token", json=body)
    assert "user" in assert_error(response, 422, "unknown_field")["detail"]


# -- WebSocket -------------------------------------------------------------------------------


async def open_ws(server: BrokerServer, token: str, subprotocol: str = "json") -> ClientConnection:
    return await connect(
        f"{server.ws_url}/ws",
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=[subprotocol],  # type: ignore[list-item]
        compression=None,
        open_timeout=5000 * MS,
    )


async def recv_frame(ws: ClientConnection) -> dict[str, Any]:
    data = await asyncio.wait_for(ws.recv(), 5000 * MS)
    frame: dict[str, Any] = (
        msgspec.msgpack.decode(data) if isinstance(data, bytes) else json.loads(data)
    )
    return frame


async def assert_still_publishes(ws: ClientConnection, msgpack: bool = False) -> None:
    """The connection is up: a good publish is confirmed."""
    frame = {"op": "publish", "queue": "jobs", "content": {"ok": True}, "ref": "good"}
    await ws.send(msgspec.msgpack.encode(frame) if msgpack else json.dumps(frame))
    reply = await recv_frame(ws)
    assert (reply["op"], reply["ref"]) == ("confirm", "good"), reply


@pytest.mark.parametrize("bad", INVALID_UTF8)
async def test_ws_json_frame_with_invalid_utf8_gets_an_error_frame(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient, bad: bytes
) -> None:
    """A binary JSON frame with invalid UTF-8 gets ``error`` invalid_encoding; the next works."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        await ws.send(b'{"op": "publish", "queue": "jobs", "ref": 1, "content": "' + bad + b'"}')
        reply = await recv_frame(ws)
        assert (reply["op"], reply["code"], reply.get("ref")) == ("error", "invalid_encoding", 1)
        await assert_still_publishes(ws)
    assert await pending(client) == 1


@pytest.mark.parametrize("bad", LONE_SURROGATES)
async def test_ws_json_text_frame_with_a_lone_surrogate_gets_an_error_frame(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient, bad: bytes
) -> None:
    """A text frame with an escaped lone surrogate gets ``error`` invalid_encoding."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        frame = b'{"op": "publish", "queue": "jobs", "ref": 1, "content": "' + bad + b'"}'
        await ws.send(frame.decode())
        reply = await recv_frame(ws)
        assert (reply["op"], reply["code"]) == ("error", "invalid_encoding")
        await assert_still_publishes(ws)


async def test_ws_msgpack_frame_with_invalid_utf8_gets_an_error_frame(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A MessagePack string holding invalid UTF-8 gets ``error`` invalid_encoding."""
    await make_queue(client)
    async with await open_ws(server, admin_token, "msgpack") as ws:
        frame = msgspec.msgpack.encode(
            {"op": "publish", "queue": "jobs", "ref": 1, "content": "XX"}
        )
        await ws.send(frame.replace(b"\xa2XX", b"\xa2\xed\xa0"))
        reply = await recv_frame(ws)
        assert (reply["op"], reply["code"], reply.get("ref")) == ("error", "invalid_encoding", 1)
        await assert_still_publishes(ws, msgpack=True)


@pytest.mark.parametrize("depth", [DEPTH, 3000])
async def test_ws_json_deep_frame_gets_too_deep(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient, depth: int
) -> None:
    """A JSON frame nested past the limit gets ``error`` too_deep, never a 1011 close."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        await ws.send(
            b'{"op": "publish", "queue": "jobs", "ref": 1, "content": ' + nested(depth) + b"}"
        )
        reply = await recv_frame(ws)
        assert (reply["op"], reply["code"]) == ("error", "too_deep")
        await assert_still_publishes(ws)


@pytest.mark.parametrize("depth", [DEPTH, 3000])
async def test_ws_msgpack_deep_frame_gets_too_deep(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient, depth: int
) -> None:
    """A MessagePack content nested past the limit gets ``error`` too_deep."""
    await make_queue(client)
    frame = msgspec.msgpack.encode({"op": "publish", "queue": "jobs", "ref": 1, "content": 0})
    async with await open_ws(server, admin_token, "msgpack") as ws:
        # The content, last, becomes ``depth`` one-element arrays around a 1.
        await ws.send(frame[:-1] + b"\x91" * depth + b"\x01")
        reply = await recv_frame(ws)
        assert (reply["op"], reply["code"]) == ("error", "too_deep")
        await assert_still_publishes(ws, msgpack=True)


async def test_ws_deep_first_frame_is_refused_without_1011(server: BrokerServer) -> None:
    """A deep first frame on an unauthenticated connection closes 1008, not 1011."""
    async with connect(f"{server.ws_url}/ws", open_timeout=5000 * MS) as ws:
        frame = b'{"op": "publish", "queue": "jobs", "ref": 1, "content": ' + nested(3000) + b"}"
        await ws.send(frame)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5000 * MS)
    assert ws.close_code == 1008, (ws.close_code, ws.close_reason)


@pytest.mark.parametrize("subprotocol", ["json", "msgpack"])
async def test_ws_unknown_field_gets_an_error_frame_naming_it(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient, subprotocol: str
) -> None:
    """``priorty`` in a publish frame gets ``error`` unknown_field naming it; the next works."""
    await make_queue(client)
    msgpack = subprotocol == "msgpack"
    frame = {"op": "publish", "queue": "jobs", "ref": 1, "content": 1, "priorty": 5}
    async with await open_ws(server, admin_token, subprotocol) as ws:
        await ws.send(msgspec.msgpack.encode(frame) if msgpack else json.dumps(frame))
        reply = await recv_frame(ws)
        assert (reply["op"], reply["code"], reply.get("ref")) == ("error", "unknown_field", 1)
        assert "priorty" in reply["detail"]
        await assert_still_publishes(ws, msgpack=msgpack)
    assert await pending(client) == 1


# -- GraphQL -------------------------------------------------------------------------------

PUBLISH = 'mutation($content: JSON!) { publish(queue: "jobs", content: $content) { messageId } }'


async def test_graphql_http_variable_with_a_lone_surrogate_is_400(
    client: httpx.AsyncClient,
) -> None:
    """A GraphQL variable holding ``\\ud800`` is 400 invalid_encoding, not an internal error."""
    await make_queue(client)
    body = json.dumps({"query": PUBLISH, "variables": {"content": "\ud800"}}).encode()
    assert rb"\ud800" in body
    assert_error(await post_raw(client, "/graphql", body), 400, "invalid_encoding")
    assert await pending(client) == 0


async def test_graphql_http_get_variables_with_a_lone_surrogate_are_400(
    client: httpx.AsyncClient,
) -> None:
    """GraphQL over GET checks its ``variables`` parameter the same way."""
    query = "query($q: String!) { queue(name: $q) { name } }"
    params = {"query": query, "variables": '{"q": "\\ud800"}'}
    assert_error(await client.get("/graphql", params=params), 400, "invalid_encoding")


async def graphql_ws(server: BrokerServer, token: str) -> ClientConnection:
    ws = await connect(
        f"{server.ws_url}/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        compression=None,
        open_timeout=5000 * MS,
    )
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    assert json.loads(await asyncio.wait_for(ws.recv(), 5000 * MS))["type"] == "connection_ack"
    return ws


async def graphql_reply(ws: ClientConnection, id: str) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5000 * MS))
        if message.get("id") == id:
            return message


async def test_graphql_ws_variable_with_a_lone_surrogate_gets_an_error(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Over graphql-transport-ws a lone surrogate variable gets ``error`` invalid_encoding."""
    await make_queue(client)
    async with await graphql_ws(server, admin_token) as ws:
        payload = {"query": PUBLISH, "variables": {"content": "\udc00"}}
        await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
        reply = await graphql_reply(ws, "1")
        assert reply["type"] == "error", reply
        assert reply["payload"][0]["extensions"]["code"] == "invalid_encoding"
        good = {"query": PUBLISH, "variables": {"content": "ok"}}
        await ws.send(json.dumps({"type": "subscribe", "id": "2", "payload": good}))
        assert (await graphql_reply(ws, "2"))["type"] == "next"
    assert await pending(client) == 1


async def test_graphql_ws_deep_variables_get_too_deep(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Over graphql-transport-ws deep variables get ``error`` too_deep; the connection stays."""
    await make_queue(client)
    async with await graphql_ws(server, admin_token) as ws:
        message = (
            b'{"type": "subscribe", "id": "1", "payload": {"query": "'
            + PUBLISH.replace('"', '\\"').encode()
            + b'", "variables": {"content": '
            + nested(DEPTH + 10)
            + b"}}}"
        )
        await ws.send(message.decode())
        reply = await graphql_reply(ws, "1")
        assert reply["type"] == "error", reply
        assert reply["payload"][0]["extensions"]["code"] == "too_deep"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5000 * MS))["type"] == "pong"

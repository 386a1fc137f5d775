"""Fuzzing the WebSocket frame decoder and the GraphQL endpoint with Hypothesis-generated input.

WebSocket (``/ws``, JSON and MessagePack): each example sends a few frames,
near-valid ones (every ``op``, fields of the right and wrong types, huge
integers, NaN, unknown ops) and garbage (random text and bytes), then an
``auth`` frame as a barrier. The server must answer with well-formed frames
only (an ``error`` has a ``code`` and a ``detail``; none is ``internal``),
never close the connection, and answer the barrier: the connection stays
usable after every error.

Hostile input is mixed in everywhere: near-valid frames with invalid UTF-8,
overlong forms and encoded surrogates in a string, escaped lone surrogates,
and nesting from 100 to 4,000 levels (both codecs); GraphQL variables with
lone surrogates, raw bad bytes or deep nesting (HTTP: 400 with its code).

GraphQL: operations generated from the broker's own schema
(``hypothesis-graphql``, valid and invalid ones) and random request bodies
over HTTP must never get a 5xx; over the graphql-transport-ws protocol, each
generated operation is answered (a result or an ``error``) and a ``ping``
after it still gets its ``pong``.

After each test the broker's ``last_error`` (``GET /stats``) is unchanged:
nothing raised an unexpected exception on the server side.

Hypothesis runs in a worker thread with blocking clients while the server
runs on the test's event loop; shrinking is off (it replays against a live
server) and examples are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import TYPE_CHECKING, Any

import httpx
import hypothesis_graphql
import msgspec
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from hypothesis_graphql import nodes
from websockets.sync.client import ClientConnection, connect

from tests.conftest import MS
from transports.graphql.schema import build_schema
from transports.wire import CLIENT_OPS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import BrokerServer

QUEUE = "fz"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

# -- strategies ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
fields: dict[str, st.SearchStrategy[Any]] = {
    "queue": st.sampled_from([QUEUE, "missing", "", "a" * 300, "bad name!"]) | json_values,
    "content": json_values,
    "ref": st.integers(-(2**70), 2**70) | st.text(max_size=300) | json_values,
    "tags": st.lists(st.integers(-(2**70), 2**70), max_size=4) | json_values,
    "prefetch": st.integers(-5, 2**40) | json_values,
    "subscription": st.integers(-5, 10) | json_values,
    "requeue": st.booleans() | json_values,
    "reason": st.text(max_size=2000) | json_values,
    "lease": st.floats(allow_nan=True, allow_infinity=True) | json_values,
    "token": st.text(max_size=100) | json_values,
    "headers": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=80) | json_values,
    "priority": st.integers(-3, 12) | json_values,
    "delay_ms": st.integers(-(2**40), 2**40) | json_values,
    "ttl_ms": st.integers(-(2**40), 2**40) | json_values,
    "deliver_at": st.text(max_size=40) | st.datetimes().map(str) | json_values,
    "dedup_id": st.text(max_size=300) | json_values,
}
frames = st.fixed_dictionaries(
    {"op": st.sampled_from(sorted(CLIENT_OPS)) | st.text(max_size=10) | json_values},
    optional=fields,
)
"""Near-valid frames: every op, with fields of the right and of wrong types."""


def _json(frame: Any) -> str:
    # allow_nan: ``NaN`` and ``Infinity`` are not JSON; the decoder must refuse them politely.
    return json.dumps(frame, allow_nan=True)


def _msgpack(frame: Any) -> bytes:
    try:
        return msgspec.msgpack.encode(frame)
    except (OverflowError, TypeError, msgspec.EncodeError):
        return b"\xc1"  # never used by MessagePack: invalid


BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
             b"\x80", b"\xf4\x90\x80\x80"]  # fmt: skip
BAD_ESCAPES = [r"\ud800", r"\udbff", r"\udc00", r"\udfff", r"\udc00\ud800", r"\ud800\u0041"]
MARK = "\u2603\u2603"
"""A marker string (6 UTF-8 bytes) replaced by hostile bytes once a frame is encoded."""

marked_frames = st.fixed_dictionaries(
    {"op": st.sampled_from(sorted(CLIENT_OPS)), "ref": st.integers(0, 99)},
    optional={
        **{name: value for name, value in fields.items() if name != "ref"},
        "content": st.just(MARK),
        "queue": st.just(MARK),
        "reason": st.just(MARK),
        "headers": st.just({"k": MARK}),
        "token": st.just(MARK),
    },
)


def _splice(encoded: bytes, bad: bytes) -> bytes:
    return encoded.replace(MARK.encode(), bad)


@st.composite
def hostile_json(draw: st.DrawFn) -> str | bytes:
    """A near-valid JSON frame with bad bytes (binary), an escaped lone surrogate, or deep."""
    frame = draw(marked_frames)
    kind = draw(st.sampled_from(["bytes", "escape", "deep"]))
    text = json.dumps({**frame, "x": MARK} if kind != "deep" else frame, ensure_ascii=False)
    if kind == "bytes":
        return _splice(text.encode(), draw(st.sampled_from(BAD_BYTES)))
    if kind == "escape":
        return text.replace(MARK, draw(st.sampled_from(BAD_ESCAPES)))
    depth = draw(st.integers(100, 4000))
    where = draw(st.sampled_from(["content", "ref", "x", "headers"]))
    deep = "[" * depth + "1" + "]" * depth
    return text[:-1] + f', "{where}": {deep}}}'


@st.composite
def hostile_msgpack(draw: st.DrawFn) -> bytes:
    """A near-valid MessagePack frame with invalid UTF-8 in a string, or a deep content."""
    frame = draw(marked_frames)
    if draw(st.booleans()):
        bad = draw(st.sampled_from(BAD_BYTES))
        return _splice(_msgpack({**frame, "x": MARK}), (bad * 6)[:6])  # the str header says 6
    frame.pop("content", None)
    encoded = _msgpack({**frame, "content": 0})  # content last: its one byte ends the frame
    return encoded[:-1] + b"\x91" * draw(st.integers(100, 4000)) + b"\x01"


json_payloads = st.one_of(
    frames.map(_json),
    st.text(max_size=200),
    json_values.map(_json),
    st.binary(max_size=200),  # a binary frame on a JSON connection
    hostile_json(),
)
msgpack_payloads = st.one_of(
    frames.map(_msgpack), st.binary(max_size=200), st.text(max_size=50), hostile_msgpack()
)

# -- helpers ---------------------------------------------------------------------------------


def _last_error(url: str, token: str) -> Any:
    stats = httpx.get(f"{url}/stats", headers={"Authorization": f"Bearer {token}"}).json()
    return stats["last_error"], stats["last_error_timestamp"]


@contextlib.contextmanager
def _ws(url: str, token: str, subprotocol: str) -> Iterator[ClientConnection]:
    with connect(
        f"{url}/ws",
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=[subprotocol],  # type: ignore[list-item]
        open_timeout=5000 * MS,
        compression=None,
        max_size=None,
    ) as ws:
        yield ws


class FrameFuzzer:
    """One connection that takes fuzz frames, then must answer an ``auth`` barrier."""

    def __init__(self, ws: ClientConnection, token: str, msgpack: bool) -> None:
        self.ws = ws
        self.token = token
        self.msgpack = msgpack
        self.barriers = 0
        self.errors = 0

    def _decode(self, data: str | bytes) -> dict[str, Any]:
        if isinstance(data, bytes):
            frame: dict[str, Any] = (
                msgspec.msgpack.decode(data) if self.msgpack else json.loads(data)
            )
        else:
            frame = json.loads(data)
        return frame

    def send_all(self, payloads: list[str | bytes]) -> None:
        for payload in payloads:
            self.ws.send(payload)
        self.barriers += 1
        ref = f"barrier-{self.barriers}"
        barrier = {"op": "auth", "token": self.token, "ref": ref}
        self.ws.send(_msgpack(barrier) if self.msgpack else _json(barrier))
        while True:
            frame = self._decode(self.ws.recv(timeout=5000 * MS))
            op = frame.get("op")
            assert op in {"error", "confirm", "subscribed", "unsubscribed", "deliver",
                          "authenticated"}, frame  # fmt: skip
            if op == "error":
                self.errors += 1
                assert isinstance(frame["code"], str) and isinstance(frame["detail"], str), frame
                assert frame["code"] != "internal", frame
            if op == "deliver":
                # Settle at once so pushes never pile up behind the prefetch.
                ack = {"op": "ack", "tags": [frame["tag"]]}
                self.ws.send(_msgpack(ack) if self.msgpack else _json(ack))
            if op == "authenticated" and frame.get("ref") == ref:
                return


def _fuzz_ws(url: str, token: str, msgpack: bool) -> FrameFuzzer:
    with _ws(url, token, "msgpack" if msgpack else "json") as ws:
        fuzzer = FrameFuzzer(ws, token, msgpack)

        @FUZZ
        @given(st.lists(msgpack_payloads if msgpack else json_payloads, min_size=1, max_size=4))
        def run(payloads: list[str | bytes]) -> None:
            fuzzer.send_all(payloads)

        run()
        assert ws.close_code is None, f"closed with {ws.close_code} {ws.close_reason}"
        return fuzzer


async def _make_queue(server: BrokerServer, token: str) -> None:
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        assert (await http.post("/queues", json={"name": QUEUE})).status_code == 201


# -- WebSocket --------------------------------------------------------------------------------


async def test_fuzzed_json_frames_leave_the_connection_usable(
    server: BrokerServer, admin_token: str
) -> None:
    """Random and near-valid JSON frames get well-formed answers and never break the connection."""
    await _make_queue(server, admin_token)
    before = await asyncio.to_thread(_last_error, server.url, admin_token)
    fuzzer = await asyncio.to_thread(_fuzz_ws, server.ws_url, admin_token, False)
    assert fuzzer.errors > 0
    assert await asyncio.to_thread(_last_error, server.url, admin_token) == before


async def test_fuzzed_msgpack_frames_leave_the_connection_usable(
    server: BrokerServer, admin_token: str
) -> None:
    """Random and near-valid MessagePack frames never break a MessagePack connection."""
    await _make_queue(server, admin_token)
    before = await asyncio.to_thread(_last_error, server.url, admin_token)
    fuzzer = await asyncio.to_thread(_fuzz_ws, server.ws_url, admin_token, True)
    assert fuzzer.errors > 0
    assert await asyncio.to_thread(_last_error, server.url, admin_token) == before


# -- GraphQL ----------------------------------------------------------------------------------


def _graphql_strategy(server: BrokerServer) -> st.SearchStrategy[str]:
    sdl = build_schema(server.settings).as_str()
    longs = st.integers(-(2**64), 2**64).map(nodes.Int)
    scalars = {
        "Long": longs,
        "JSON": st.one_of(
            st.text(max_size=20).map(nodes.String), longs, st.booleans().map(nodes.Boolean)
        ),
        "DateTime": st.one_of(
            st.datetimes().map(lambda d: nodes.String(d.isoformat())),
            st.text(max_size=30).map(nodes.String),
        ),
    }
    strategies = [
        hypothesis_graphql.from_schema(sdl, custom_scalars=scalars, mode=mode)
        for mode in (hypothesis_graphql.Mode.POSITIVE, hypothesis_graphql.Mode.NEGATIVE)
    ]
    return st.one_of(*strategies).map(str)


_QUEUE_ARGUMENT = re.compile(r'\b(queue|name): "(?:[^"\\]|\\.)*"')


def _aim(operation: str, http: httpx.Client) -> str:
    """Point the operation's queue arguments at queue ``fz`` (made again if it was deleted)."""
    http.post("/queues", json={"name": QUEUE})
    return _QUEUE_ARGUMENT.sub(rf'\1: "{QUEUE}"', operation)


graphql_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"query": st.text(max_size=200)},
        optional={"variables": json_values, "operationName": json_values},
    ),
)

HOSTILE_QUERY = "mutation($c: JSON!, $q: String!) { publish(queue: $q, content: $c) { messageId } }"


@st.composite
def hostile_variables(draw: st.DrawFn) -> str:
    """The JSON text of a ``variables`` object with an escaped lone surrogate or deep nesting.

    Nesting stays under the depth where the stdlib parser gives up, so the
    operation's id can still be read to answer it.
    """
    if draw(st.booleans()):
        bad = draw(st.sampled_from(BAD_ESCAPES))
        return '{"q": "' + QUEUE + '", "c": "' + bad + '"}'
    depth = draw(st.integers(130, 600))  # past the default limit of 128, body included
    return '{"q": "' + QUEUE + '", "c": ' + "[" * depth + "1" + "]" * depth + "}"


def _fuzz_graphql_http(url: str, token: str, operations: st.SearchStrategy[str]) -> int:
    answered = 0
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:

        @FUZZ
        @given(
            operation=operations,
            body=graphql_bodies,
            raw=st.sampled_from(["operation", "body", "hostile"]),
            aim=st.booleans(),
            variables=hostile_variables(),
            bad=st.sampled_from(BAD_BYTES),
        )
        def run(operation: str, body: Any, raw: str, aim: bool, variables: str, bad: bytes) -> None:
            nonlocal answered
            if aim:
                operation = _aim(operation, http)
            if raw == "body":
                response = http.post("/graphql", content=_json(body).encode())
            elif raw == "hostile":
                hostile = '{"query": ' + json.dumps(HOSTILE_QUERY) + ', "variables": ' + variables
                content = (hostile + "}").encode()
                if aim:  # raw bytes instead of an escape
                    content = content.replace(b'"' + QUEUE.encode(), b'"' + bad, 1)
                response = http.post(
                    "/graphql", content=content, headers={"content-type": "application/json"}
                )
                assert response.status_code == 400, response.text
                assert response.json()["code"] in ("invalid_encoding", "too_deep"), response.text
            else:
                response = http.post("/graphql", json={"query": operation})
            assert response.status_code < 500, (operation, body, response.text)
            answered += 1

        run()
    return answered


async def test_fuzzed_graphql_requests_get_no_5xx(server: BrokerServer, admin_token: str) -> None:
    """Generated GraphQL operations (valid and invalid) and random bodies never get a 5xx."""
    await _make_queue(server, admin_token)
    before = await asyncio.to_thread(_last_error, server.url, admin_token)
    operations = _graphql_strategy(server)
    answered = await asyncio.to_thread(_fuzz_graphql_http, server.url, admin_token, operations)
    assert answered > 0
    assert await asyncio.to_thread(_last_error, server.url, admin_token) == before


def _fuzz_graphql_ws(url: str, ws_url: str, token: str, operations: st.SearchStrategy[str]) -> int:
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=url, headers=headers) as http,
        connect(
            f"{ws_url}/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
            open_timeout=5000 * MS,
            compression=None,
        ) as ws,
    ):

        def recv() -> dict[str, Any]:
            message: dict[str, Any] = json.loads(ws.recv(timeout=5000 * MS))
            return message

        ws.send(_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
        assert recv()["type"] == "connection_ack"
        ids = iter(range(1, 1 << 30))

        @FUZZ
        @given(operation=operations, aim=st.booleans(), variables=hostile_variables() | st.none())
        def run(operation: str, aim: bool, variables: str | None) -> None:
            nonlocal errors
            if aim:
                operation = _aim(operation, http)
            id = str(next(ids))
            if variables is None:
                ws.send(_json({"type": "subscribe", "id": id, "payload": {"query": operation}}))
            else:
                query = json.dumps(HOSTILE_QUERY)
                payload = '{"query": ' + query + ', "variables": ' + variables + "}"
                ws.send('{"type": "subscribe", "id": "' + id + '", "payload": ' + payload + "}")
            while True:
                message = recv()
                if message.get("id") != id:
                    continue
                if message["type"] == "error":
                    errors += 1
                    break
                if message["type"] == "complete":
                    break
                assert message["type"] == "next", message
                for error in message["payload"].get("errors") or ():
                    assert error.get("extensions", {}).get("code") != "internal", error
            ws.send(_json({"type": "ping"}))
            while recv()["type"] != "pong":
                pass

        run()
        assert ws.close_code is None, f"closed with {ws.close_code} {ws.close_reason}"
    return errors


async def test_graphql_websocket_stays_usable_after_errors(
    server: BrokerServer, admin_token: str
) -> None:
    """Generated operations over graphql-transport-ws are answered and a ping still gets a pong."""
    await _make_queue(server, admin_token)
    before = await asyncio.to_thread(_last_error, server.url, admin_token)
    operations = _graphql_strategy(server)
    errors = await asyncio.to_thread(
        _fuzz_graphql_ws, server.url, server.ws_url, admin_token, operations
    )
    assert errors > 0
    assert await asyncio.to_thread(_last_error, server.url, admin_token) == before

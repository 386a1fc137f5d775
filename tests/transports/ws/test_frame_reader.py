"""The server's own reader of client frames (`transports.ws.direct`), byte for byte.

`BrokerWebSocketProtocol` reads final, masked text and binary frames itself
and hands every other frame, whole, to ``websockets``. These tests write
hand-made frames on the client's socket, cut anywhere, mixed with control
frames and fragments, or malformed, and check the answers a client gets:
every publish confirmed in order, pings answered, fragments joined, and a
malformed frame closed with the code RFC 6455 gives it.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from websockets.frames import Frame, Opcode

from tests.transports.ws.test_endpoint import closed_with, make_queue, open_ws, recv

if TYPE_CHECKING:
    import httpx
    from websockets.asyncio.client import ClientConnection

    from tests.conftest import BrokerServer

MS = 0.001


def frame(
    opcode: Any, data: bytes, *, fin: bool = True, mask: bool = True, rsv1: bool = False
) -> bytes:
    """One client frame's bytes (``rsv1``: with the first reserved bit set, as no extension)."""
    raw = Frame(opcode, data, fin=fin).serialize(mask=mask, extensions=[])
    return bytes((raw[0] | 0x40,)) + raw[1:] if rsv1 else raw


def body(n: int, content: Any = None) -> dict[str, Any]:
    """A ``publish`` to ``jobs`` with ``ref`` n (content n unless given)."""
    content = n if content is None else content
    return {"op": "publish", "queue": "jobs", "content": content, "ref": n}


def publish(n: int, content: Any = None) -> bytes:
    """The frame of `body`."""
    return frame(Opcode.TEXT, json.dumps(body(n, content)).encode())


async def write_in_pieces(ws: ClientConnection, data: bytes, cuts: list[int]) -> None:
    """Write ``data`` on the socket cut at ``cuts``, each piece its own read on the server."""
    transport: Any = ws.transport
    start = 0
    for cut in [*cuts, len(data)]:
        transport.write(data[start:cut])
        start = cut
        await asyncio.sleep(2 * MS)


async def confirms(ws: ClientConnection, count: int) -> list[int]:
    """The refs of the next ``count`` answers, which must all be confirms."""
    answers = [await recv(ws) for _ in range(count)]
    assert [a["op"] for a in answers] == ["confirm"] * count, answers
    return [a["ref"] for a in answers]


async def test_frames_cut_at_every_byte_are_each_confirmed_in_order(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Three publishes, one written a byte at a time and two cut inside their headers."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        first = publish(0)
        await write_in_pieces(ws, first, list(range(1, len(first))))
        medium = publish(1, "m" * 300)  # a 2-byte extended length
        large = publish(2, "l" * 70_000)  # an 8-byte extended length
        data = medium + large
        await write_in_pieces(ws, data, [1, 3, 5, len(medium) + 1, len(medium) + 6, len(data) - 1])
        assert await confirms(ws, 3) == [0, 1, 2]


async def test_pings_between_data_frames_are_answered(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """publish, ping, publish sent together: both confirmed, the ping ponged."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        ws.protocol.send_text(json.dumps(body(0)).encode())
        pong = await ws.ping(b"p1")  # sends the publish and the ping
        ws.transport.write(publish(1) + frame(Opcode.PING, b"p2"))
        assert await confirms(ws, 2) == [0, 1]
        await asyncio.wait_for(pong, 5)


async def test_a_fragmented_message_with_a_ping_inside_is_one_publish(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """A publish in three fragments, a ping between them, then a whole publish."""
    await make_queue(client)
    text = json.dumps({"op": "publish", "queue": "jobs", "content": "joined", "ref": 0}).encode()
    parts = [
        frame(Opcode.TEXT, text[:10], fin=False),
        frame(Opcode.PING, b"x"),
        frame(Opcode.CONT, text[10:20], fin=False),
        frame(Opcode.CONT, text[20:]),
        publish(1),
    ]
    async with await open_ws(server, admin_token) as ws:
        data = b"".join(parts)
        await write_in_pieces(ws, data, [3, len(parts[0]) + 1, len(data) - 2])
        assert await confirms(ws, 2) == [0, 1]
    stored = (await client.get("/queues/jobs/messages")).json()
    assert [m["content"] for m in stored["messages"]] == ["joined", 1]


async def test_binary_frames_are_read_on_a_msgpack_connection(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Two msgpack publishes in one write, the second cut in two."""
    await make_queue(client)
    async with await open_ws(server, admin_token, subprotocols=["msgpack"]) as ws:
        encode = msgspec.msgpack.encode
        data = b"".join(
            frame(Opcode.BINARY, encode({"op": "publish", "queue": "jobs", "content": n, "ref": n}))
            for n in range(2)
        )
        await write_in_pieces(ws, data, [len(data) - 3])
        answers = [msgspec.msgpack.decode(await ws.recv(decode=False)) for _ in range(2)]
    assert [(a["op"], a["ref"]) for a in answers] == [("confirm", 0), ("confirm", 1)]


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(Opcode.TEXT, b'{"op": "\xff"}'), 1007),  # invalid UTF-8
        (frame(Opcode.TEXT, b'{"op": "ping"}', mask=False), 1002),  # a client frame must be masked
        (frame(Opcode.TEXT, b'{"op": "ping"}', rsv1=True), 1002),  # no extension claims the bit
        (bytes((0x83, 0x80)) + b"mask", 1002),  # a reserved opcode
    ],
)
async def test_a_malformed_frame_closes_with_its_code(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient, bad: bytes, code: int
) -> None:
    """Behind good frames in the same write, or alone: the close code RFC 6455 gives it."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        ws.transport.write(publish(0) + publish(1) + bad)
        assert (await closed_with(ws))[0] == code
    async with await open_ws(server, admin_token) as ws:
        ws.transport.write(publish(2) + bad[:1])
        assert await confirms(ws, 1) == [2]
        ws.transport.write(bad[1:])
        assert (await closed_with(ws))[0] == code


async def test_a_frame_over_the_size_limit_closes_before_its_payload_arrives(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """Only the header of a too-big frame is sent: the server closes with 1009 at once.

    (The publish before it, with the header's first bytes, is confirmed first.)
    """
    await make_queue(client)
    too_big = server.settings.ws_max_frame_bytes + 1
    header = bytes((0x81, 0x80 | 127)) + too_big.to_bytes(8, "big") + b"mask"
    async with await open_ws(server, admin_token) as ws:
        ws.transport.write(publish(0) + header[:3])
        assert await confirms(ws, 1) == [0]
        ws.transport.write(header[3:])
        assert (await closed_with(ws))[0] == 1009


async def test_a_client_close_after_a_publish_in_the_same_write_completes(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient
) -> None:
    """publish and close in one write: the publish is kept, the close handshake ends 1000."""
    await make_queue(client)
    async with await open_ws(server, admin_token) as ws:
        ws.protocol.send_close(1000, "bye")
        closing = b"".join(ws.protocol.data_to_send())
        ws.transport.write(publish(0) + closing)
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1000
    stored = (await client.get("/queues/jobs/messages")).json()
    assert [m["content"] for m in stored["messages"]] == [0]


@pytest.mark.parametrize("auth", ["header", "frame"])
async def test_frames_sent_with_the_handshake_request_are_answered(
    server: BrokerServer, admin_token: str, client: httpx.AsyncClient, auth: str
) -> None:
    """The upgrade request and two publishes in one write, before the 101: both confirmed.

    RFC 6455 lets a client send frames only once the handshake is done, but
    one that does not wait must still get an answer for what it sent (here
    with the token in a header, or in an ``auth`` frame sent along too).
    """
    await make_queue(client)
    header = f"Authorization: Bearer {admin_token}\r\n" if auth == "header" else ""
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{header}\r\n"
    ).encode()
    early = (
        b""
        if auth == "header"
        else frame(Opcode.TEXT, json.dumps({"op": "auth", "token": admin_token}).encode())
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request + early + publish(0) + publish(1))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        answers = []
        for _ in range(2 if auth == "header" else 3):
            first, length = await asyncio.wait_for(reader.readexactly(2), 5)
            assert first == 0x81 and length < 126, (first, length)
            answers.append(json.loads(await reader.readexactly(length)))
        confirmed = [(a["op"], a["ref"]) for a in answers if a["op"] != "authenticated"]
        assert confirmed == [("confirm", 0), ("confirm", 1)], answers
    finally:
        writer.close()
    stored = (await client.get("/queues/jobs/messages")).json()
    assert [m["content"] for m in stored["messages"]] == [0, 1]


async def test_frames_sent_with_a_refused_handshake_request_get_the_refusal(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A bad token with publishes in the same write: a 401 and the end of the connection."""
    await make_queue(client)
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer not-a-token\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request + publish(0) + publish(1))
        answer = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    finally:
        writer.close()
    stored = (await client.get("/queues/jobs/messages")).json()
    assert stored["messages"] == []

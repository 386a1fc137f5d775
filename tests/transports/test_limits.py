"""What one client may take of the broker: each limit answers a precise 4xx or closes cleanly.

Counts and sizes (queues, headers, batches), request heads (431), connections
per address (429) and slow clients (cut off after the request timeout). The
head and connection tests use raw sockets, since HTTP clients refuse to send
what they send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets

from tests.conftest import MS, login

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.conftest import BrokerServer

TIMEOUT = 5000 * MS
KIB = 1024
SLOW = pytest.mark.parametrize("settings_overrides", [{"request_timeout_s": 0.3}])
"""A request timeout short enough for the slow-client tests."""


@pytest.mark.parametrize("settings_overrides", [{"max_queues": 2}])
async def test_queue_count_limit(client: httpx.AsyncClient) -> None:
    """Past max_queues, creating a queue answers 422 and creates nothing."""
    for name in ("a", "b"):
        assert (await client.post("/queues", json={"name": name})).status_code == 201
    response = await client.post("/queues", json={"name": "c"})
    assert response.status_code == 422
    assert "limit" in response.json()["detail"]
    assert len((await client.get("/queues")).json()) == 2


@pytest.mark.parametrize("settings_overrides", [{"max_headers": 2}])
async def test_header_count_limit(client: httpx.AsyncClient) -> None:
    """A message with more headers than max_headers answers 422."""
    await client.post("/queues", json={"name": "jobs"})
    headers = {f"h{i}": "v" for i in range(3)}
    response = await client.post("/queues/jobs/messages", json={"content": 1, "headers": headers})
    assert response.status_code == 422


@pytest.mark.parametrize("settings_overrides", [{"max_batch": 3}])
async def test_batch_size_limit(client: httpx.AsyncClient) -> None:
    """A batch over max_batch answers 413 and publishes nothing."""
    await client.post("/queues", json={"name": "jobs"})
    batch = {"messages": [{"content": i} for i in range(4)]}
    assert (await client.post("/queues/jobs/messages/batch", json=batch)).status_code == 413
    assert (await client.get("/queues/jobs")).json()["pending"] == 0


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    """Without configured origins, no CORS header invites another site in."""
    response = await client.get("/queues", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        "/queues",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


@contextlib.asynccontextmanager
async def raw(
    server: BrokerServer,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A plain TCP connection to ``server``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Read a response up to the server's EOF: status, headers and JSON body."""
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, json.loads(body) if body else {}


async def get_health(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """GET /health on a kept-alive connection; the status."""
    writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
    return int(head.split(b" ")[1])


async def test_request_head_over_64_kib_is_431(server: BrokerServer) -> None:
    """A request with a 100 KiB header is answered 431 with an error body, and closed."""
    async with raw(server) as (reader, writer):
        writer.write(
            b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (100 * KIB) + b"\r\n\r\n"
        )
        await writer.drain()
        status, headers, body = await answer(reader)
    assert status == 431
    assert headers["connection"] == "close"
    assert body["code"] == "header_too_large"
    assert body["status_code"] == 431


async def test_head_just_under_the_limit_is_served(server: BrokerServer) -> None:
    """A head a little under 64 KiB, sent with its body in one write, is served as before."""
    token = (await login(server.url))["access_token"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(
            "/queues",
            json={"name": "jobs"},
            headers={"Authorization": f"Bearer {token}", "X-Pad": "p" * (60 * KIB)},
        )
    assert response.status_code == 201, response.text


async def test_trickled_head_is_cut_at_64_kib_while_health_answers(server: BrokerServer) -> None:
    """A header sent 4 KiB at a time is answered 431 once past 64 KiB; /health answers meanwhile."""
    chunk = b"a" * (4 * KIB)
    sent = 0
    async with raw(server) as (reader, writer), httpx.AsyncClient(base_url=server.url) as http:
        writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        response = None
        while sent < 1024 * KIB:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            if sent == 32 * KIB:
                assert (await http.get("/health")).status_code == 200
            with contextlib.suppress(TimeoutError):
                response = await asyncio.wait_for(reader.read(1), 20 * MS)
                break
        assert response, "the server closed without an answer"
        rest = await asyncio.wait_for(reader.read(), TIMEOUT)
    # Slack: the answer may cross a few more chunks on their way.
    assert sent <= 96 * KIB, f"the server read {sent} bytes of head"
    assert (response + rest).startswith(b"HTTP/1.1 431 ")


async def test_websocket_upgrade_with_a_huge_head_is_431(server: BrokerServer) -> None:
    """A WebSocket upgrade request with a 100 KiB header is answered 431, not upgraded."""
    async with raw(server) as (reader, writer):
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"X-Big: " + b"a" * (100 * KIB) + b"\r\n\r\n"
        )
        await writer.drain()
        status, _, body = await answer(reader)
    assert status == 431
    assert body["code"] == "header_too_large"


@pytest.mark.parametrize("settings_overrides", [{"max_connections_per_address": 3}])
async def test_connection_past_the_cap_per_address_is_429(server: BrokerServer) -> None:
    """With three connections open from one address, a fourth gets 429 and Retry-After."""
    async with raw(server) as first, raw(server) as second, raw(server) as third:
        for reader, writer in (first, second, third):
            assert await get_health(reader, writer) == 200
        async with raw(server) as (reader, writer):
            writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            await writer.drain()
            status, headers, body = await answer(reader)
        assert status == 429
        assert int(headers["retry-after"]) >= 1
        assert body["code"] == "too_many_connections"
        assert await get_health(*first) == 200


@pytest.mark.parametrize("settings_overrides", [{"max_connections_per_address": 2}])
async def test_closed_connections_free_their_place(server: BrokerServer) -> None:
    """Once connections close, WebSockets among them, the address may open as many again."""
    token = (await login(server.url))["access_token"]
    for _ in range(3):
        async with (
            websockets.connect(
                f"{server.ws_url}/ws", additional_headers={"Authorization": f"Bearer {token}"}
            ),
            raw(server) as (reader, writer),
        ):
            assert await get_health(reader, writer) == 200
    async with raw(server) as first, raw(server) as second:
        assert await get_health(*first) == 200
        assert await get_health(*second) == 200


@pytest.mark.parametrize("settings_overrides", [{"max_connections_per_address": 2}])
async def test_open_websockets_count_against_the_address(server: BrokerServer) -> None:
    """Two open WebSockets fill a cap of two: an HTTP connection then gets 429."""
    token = (await login(server.url))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        websockets.connect(f"{server.ws_url}/ws", additional_headers=headers),
        websockets.connect(f"{server.ws_url}/ws", additional_headers=headers),
        raw(server) as (reader, writer),
    ):
        writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        await writer.drain()
        status, _, _ = await answer(reader)
    assert status == 429


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(), seconds)
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 4")


@SLOW
async def test_silent_connection_is_closed(server: BrokerServer) -> None:
    """A connection that never sends a request is closed after the request timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await _closed_within(reader, 3000 * MS)
    writer.close()


@SLOW
async def test_trickled_request_head_is_closed(server: BrokerServer) -> None:
    """A request head sent a byte at a time is cut off."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    closed = False
    for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n":
        writer.write(bytes([byte]))
        await asyncio.sleep(50 * MS)
        if reader.at_eof() or writer.is_closing():
            closed = True
            break
    assert closed or await _closed_within(reader, 1000 * MS)
    writer.close()


@SLOW
async def test_long_poll_outlives_the_request_timeout(client: httpx.AsyncClient) -> None:
    """A consume waiting longer than the request timeout still gets its answer."""
    await client.post("/queues", json={"name": "jobs"})
    response = await client.get("/queues/jobs/messages/consume", params={"wait": 0.8})
    assert response.status_code == 204

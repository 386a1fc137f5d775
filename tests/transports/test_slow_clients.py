"""Slow clients (slowloris) are cut off; a long poll is not."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from tests.conftest import MS

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer

pytestmark = pytest.mark.parametrize("settings_overrides", [{"request_timeout_s": 0.3}])


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(), seconds)
    except TimeoutError:
        return False
    return data == b"" or data.startswith(b"HTTP/1.1 4")


async def test_silent_connection_is_closed(server: BrokerServer) -> None:
    """A connection that never sends a request is closed after the request timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await _closed_within(reader, 3000 * MS)
    writer.close()


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


async def test_long_poll_outlives_the_request_timeout(client: httpx.AsyncClient) -> None:
    """A consume waiting longer than the request timeout still gets its answer."""
    await client.post("/queues", json={"name": "jobs"})
    response = await client.get("/queues/jobs/messages/consume", params={"wait": 0.8})
    assert response.status_code == 204

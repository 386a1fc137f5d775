"""The request middleware: ``X-Process-Time`` and ``X-Request-ID`` on every response, WS counted."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import MS

if TYPE_CHECKING:
    from tests.conftest import BrokerServer


@pytest.mark.parametrize(
    ("method", "path", "body", "authenticated", "status"),
    [
        ("GET", "/queues", None, True, 200),
        ("GET", "/queues", None, False, 401),
        ("GET", "/queues/missing", None, True, 404),
        ("GET", "/no/such/route", None, True, 404),
        ("DELETE", "/stats", None, True, 405),
        ("POST", "/queues", {"name": "not a valid name!"}, True, 422),
        ("GET", "/health", None, False, 200),
        ("GET", "/schema/openapi.json", None, True, 200),
        ("GET", "/stats", None, True, 200),
    ],
    ids=["success", "401", "404-handler", "404-routing", "405", "422", "health", "schema", "stats"],
)
async def test_every_response_carries_process_time(
    server: BrokerServer,
    admin_token: str,
    method: str,
    path: str,
    body: object,
    authenticated: bool,
    status: int,
) -> None:
    """Each kind of response carries X-Process-Time, a non-negative number of seconds."""
    headers = {"Authorization": f"Bearer {admin_token}"} if authenticated else {}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        response = await http.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert float(response.headers["x-process-time"]) >= 0


async def test_each_request_gets_its_own_id(client: httpx.AsyncClient) -> None:
    """Without an incoming X-Request-ID, every response carries a new one."""
    first = (await client.get("/health")).headers["x-request-id"]
    second = (await client.get("/health")).headers["x-request-id"]
    assert first and second and first != second


async def test_a_sane_incoming_request_id_is_reused(client: httpx.AsyncClient) -> None:
    """A client's well-formed X-Request-ID comes back unchanged."""
    response = await client.get("/health", headers={"X-Request-ID": "gw-7f3a.42:b"})
    assert response.headers["x-request-id"] == "gw-7f3a.42:b"


@pytest.mark.parametrize(
    "incoming",
    ["has spaces in it", "x" * 200, "-leading-dash", 'quote"d'],
    ids=["spaces", "too-long", "leading-dash", "quote"],
)
async def test_an_insane_incoming_request_id_is_replaced(
    client: httpx.AsyncClient, incoming: str
) -> None:
    """An X-Request-ID with odd characters or too long is replaced by a fresh id."""
    response = await client.get("/health", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] != incoming


async def test_websocket_upgrades_are_counted(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A WebSocket handshake is counted, with method WS, even when it is refused."""
    with pytest.raises(InvalidStatus):
        async with connect(f"{server.ws_url}/no-such-socket", open_timeout=5000 * MS):
            pass  # pragma: no cover - the handshake is refused
    by_route = (await client.get("/stats")).json()["requests_by_route"]
    assert by_route["<unmatched>"]["WS"] == 1

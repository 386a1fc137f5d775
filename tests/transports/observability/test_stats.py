"""``GET /stats``: the documented fields, and counts that follow requests and messages."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import make_user
from transports.errors import last_error
from transports.observability import StatsResponse, build_stats
from transports.observability.stats import format_uptime

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import BrokerServer

TOP_LEVEL = {
    "start_time": str,
    "uptime_seconds": float,
    "uptime_human": str,
    "requests_total": int,
    "requests_by_route": dict,
    "requests_by_status": dict,
    "queues_total": int,
    "messages_total": int,
    "messages_pending": int,
    "messages_processing": int,
    "messages_processed": int,
    "messages_failed": int,
    "last_error": (str, type(None)),
    "last_error_timestamp": (str, type(None)),
    "system": dict,
    "broker_specific": dict,
}
SYSTEM = {
    "process_cpu_percent": float,
    "host_cpu_percent": float,
    "memory_rss_bytes": int,
    "memory_percent": float,
    "disk_total_bytes": int,
    "disk_used_bytes": int,
    "disk_free_bytes": int,
    "disk_percent": float,
    "open_connections": (int, type(None)),
    "threads": int,
    "python_version": str,
    "os": str,
}
BROKER_SPECIFIC = {
    "framework": str,
    "version": str,
    "storage": dict,
    "auth_method": str,
    "tls": bool,
    "queues": list,
    "rates": dict,
}


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def make_queue(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post("/queues", json={"name": name})
    assert response.status_code == 201, response.text


async def publish(client: httpx.AsyncClient, queue: str, count: int) -> None:
    for index in range(count):
        response = await client.post(f"/queues/{queue}/messages", json={"content": str(index)})
        assert response.status_code == 201, response.text


def assert_types(body: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, kind in expected.items():
        assert key in body, key
        assert isinstance(body[key], kind), (key, body[key])


@pytest.fixture
def saved_last_error() -> Iterator[None]:
    """Restore the process-wide last error after a test records one."""
    saved = (last_error.message, last_error.timestamp)
    yield
    last_error.message, last_error.timestamp = saved


async def test_stats_has_documented_top_level_fields(client: httpx.AsyncClient) -> None:
    """/stats answers every field of DESIGN.md's StatsResponse with its type."""
    body = await stats(client)
    assert_types(body, TOP_LEVEL)
    datetime.fromisoformat(body["start_time"])


async def test_stats_system_block_has_psutil_readings(client: httpx.AsyncClient) -> None:
    """The system block holds CPU, memory, disk, connections, threads and versions."""
    system = (await stats(client))["system"]
    assert_types(system, SYSTEM)
    assert system["memory_rss_bytes"] > 0
    assert system["disk_total_bytes"] >= system["disk_used_bytes"] > 0


async def test_stats_broker_specific_describes_the_broker(client: httpx.AsyncClient) -> None:
    """broker_specific names framework, version, storage, auth method and TLS."""
    specific = (await stats(client))["broker_specific"]
    assert_types(specific, BROKER_SPECIFIC)
    assert specific["framework"] == "litestar"
    assert specific["storage"]["backend"] == "sqlite"
    assert specific["storage"]["size_bytes"] > 0
    assert specific["auth_method"] == "jwt-bearer"
    assert specific["tls"] is False
    assert set(specific["rates"]) >= {"publish_per_s", "deliver_per_s", "ack_per_s", "nack_per_s"}


async def test_stats_needs_a_token(server: BrokerServer) -> None:
    """/stats without a bearer token is 401."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        assert (await anonymous.get("/stats")).status_code == 401


async def test_request_counts_follow_requests_by_route_template(
    client: httpx.AsyncClient,
) -> None:
    """Requests are counted by route template and method, and by status."""
    await make_queue(client, "jobs")
    before = await stats(client)
    for _ in range(3):
        assert (await client.get("/queues/jobs")).status_code == 200
    assert (await client.get("/queues/missing")).status_code == 404
    after = await stats(client)
    # The first /stats is counted once answered; the second does not count itself.
    assert after["requests_total"] - before["requests_total"] == 5
    by_route = after["requests_by_route"]
    assert by_route["/queues/{name}"]["GET"] == 4
    assert "/queues/jobs" not in by_route
    assert after["requests_by_status"]["404"] - before["requests_by_status"].get("404", 0) == 1


async def test_unmatched_routes_share_one_label(client: httpx.AsyncClient) -> None:
    """Requests to unknown paths are counted under <unmatched>, not by path."""
    for path in ("/nope", "/nope/again", "/other"):
        assert (await client.get(path)).status_code == 404
    by_route = (await stats(client))["requests_by_route"]
    assert by_route["<unmatched>"]["GET"] == 3
    assert "/nope" not in by_route


async def test_message_counts_follow_messages(client: httpx.AsyncClient) -> None:
    """Pending, processing, processed and failed follow publish, consume, ack and nack."""
    await make_queue(client, "jobs")
    await publish(client, "jobs", 4)
    consumed = await client.get("/queues/jobs/messages/consume", params={"max": 3})
    ids = [m["message_id"] for m in consumed.json()["messages"]]
    assert (await client.post(f"/messages/{ids[0]}/ack")).status_code == 200
    nack = await client.post(f"/messages/{ids[1]}/nack", params={"requeue": "false"})
    assert nack.status_code == 200, nack.text
    body = await stats(client)
    assert body["queues_total"] == 1
    assert (
        body["messages_pending"],
        body["messages_processing"],
        body["messages_processed"],
        body["messages_failed"],
        body["messages_total"],
    ) == (1, 1, 1, 1, 4)
    (queue,) = body["broker_specific"]["queues"]
    assert queue["name"] == "jobs"
    assert (queue["published_total"], queue["delivered_total"], queue["acked_total"]) == (4, 3, 1)


async def test_rates_count_recent_publishes(client: httpx.AsyncClient) -> None:
    """Messages published within the last minute give a positive publish rate."""
    await make_queue(client, "jobs")
    await publish(client, "jobs", 5)
    rates = (await stats(client))["broker_specific"]["rates"]
    assert rates["publish_per_s"] > 0
    assert rates["ack_per_s"] == 0


async def test_last_error_and_its_timestamp_are_reported(
    client: httpx.AsyncClient, saved_last_error: None
) -> None:
    """The last server-side error recorded by the exception handlers shows in /stats."""
    last_error.record("RuntimeError: disk on fire")
    body = await stats(client)
    assert body["last_error"] == "RuntimeError: disk on fire"
    assert datetime.fromisoformat(body["last_error_timestamp"]).timestamp() == pytest.approx(
        last_error.timestamp
    )


async def test_queues_a_user_cannot_see_are_not_listed(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A non-admin's /stats lists only the queues it has a permission on."""
    await make_queue(client, "alpha")
    await make_queue(client, "beta")
    token = await make_user(client, server, "carol", [{"pattern": "alpha", "actions": ["consume"]}])
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as carol:
        body = await stats(carol)
    assert [q["name"] for q in body["broker_specific"]["queues"]] == ["alpha"]
    assert body["queues_total"] == 1


async def test_build_stats_serves_other_transports(server: BrokerServer) -> None:
    """build_stats(ctx) returns the StatsResponse GraphQL resolves to."""
    result = build_stats(server.ctx)
    assert isinstance(result, StatsResponse)
    assert result.queues_total == 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (5.9, "5s"), (65, "1m 5s"), (3605, "1h 0m 5s"), (183845, "2d 3h 4m 5s")],
)
def test_uptime_human_leaves_out_leading_zero_units(seconds: float, text: str) -> None:
    """uptime_human reads like 2d 3h 4m 5s, without leading zero units."""
    assert format_uptime(seconds) == text

"""Resource limits and secrets: each limit answers a clear 4xx; no secret leaves the broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD

if TYPE_CHECKING:
    from tests.conftest import BrokerServer


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


@pytest.mark.parametrize("settings_overrides", [{"log_level": "DEBUG"}])
async def test_secrets_never_leave_the_broker(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Neither the JWT secret, the admin password nor a token shows in stats, metrics or logs."""
    secret = (server.settings.data_dir / "jwt.secret").read_text().strip()
    token = client.headers["authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        await anonymous.post("/auth/token", json={"username": "admin", "password": "wrong-guess"})
        await anonymous.get("/queues", params={"access_token": token})
    exposed = [
        (await client.get("/stats")).text,
        (await client.get("/metrics")).text,
    ]
    for log in (await client.get("/logs")).json():
        exposed.append((await client.get(f"/logs/{log['name']}")).text)
    exposed.extend(path.read_text() for path in server.settings.logs_dir.glob("*.jsonl"))
    for text in exposed:
        assert secret not in text
        assert ADMIN_PASSWORD not in text
        assert token not in text
        assert "wrong-guess" not in text


async def test_secret_files_are_private(server: BrokerServer) -> None:
    """The generated JWT secret is readable by its owner only."""
    mode = (server.settings.data_dir / "jwt.secret").stat().st_mode & 0o777
    assert mode == 0o600

"""Webhook safety: a name allowed by pattern may not resolve into a range nobody allowed."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import MS, BrokerServer, make_user
from tests.transports.webhooks.receiver import Receiver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The name, not its loopback address: deliveries to it must be refused.
    return {"webhook_allowed_hosts": ("localhost",)}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    endpoint = Receiver()
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


async def test_name_resolving_to_loopback_refused_at_delivery(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    response = await client.post("/queues", json={"name": "jobs", "max_attempts": 2})
    assert response.status_code == 201
    url = f"http://localhost:{receiver.port}/hook"
    response = await client.post("/queues/jobs/webhooks", json={"url": url})
    assert response.status_code == 201, response.text
    response = await client.post("/queues/jobs/messages", json={"content": 1})
    assert response.status_code == 201
    deadline = time.monotonic() + 10_000 * MS
    while True:
        [hook] = (await client.get("/queues/jobs/webhooks")).json()
        if hook["failures"] >= 2:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(20 * MS)
    assert "not allowed" in hook["last_error"]
    assert "127.0.0.1" in hook["last_error"] or "::1" in hook["last_error"]
    assert receiver.received == []
    info = (await client.get("/queues/jobs")).json()
    assert info["failed"] == 1  # max_attempts spent: the message failed, never posted


async def test_needs_manage_and_consume(server: BrokerServer, client: httpx.AsyncClient) -> None:
    response = await client.post("/queues", json={"name": "jobs"})
    assert response.status_code == 201
    body = {"url": "http://localhost:1/hook"}
    manager = await make_user(
        client, server, "mgr", [{"pattern": "jobs", "actions": ["manage", "publish"]}]
    )
    consumer = await make_user(client, server, "con", [{"pattern": "jobs", "actions": ["consume"]}])
    both = await make_user(
        client, server, "both", [{"pattern": "jobs", "actions": ["manage", "consume"]}]
    )
    for token, status in ((manager, 403), (consumer, 403), (both, 201)):
        response = await client.post(
            "/queues/jobs/webhooks", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == status, response.text
    response = await client.get(
        "/queues/jobs/webhooks", headers={"Authorization": f"Bearer {consumer}"}
    )
    assert response.status_code == 403


def test_retry_after_forms() -> None:
    from transports.webhooks.delivery import retry_after_ms

    assert retry_after_ms("3", 0.0) == 3000
    assert retry_after_ms(None, 0.0) is None
    assert retry_after_ms("soon", 0.0) is None
    assert retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 - 2) == 2000
    assert retry_after_ms("0", 0.0) == 1  # a requeue always waits at least 1 ms

"""Webhooks over GraphQL: create (secret shown once), list, pause/resume, delete, bad input."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import MS
from tests.transports.graphql.test_http import data_of, error_of, make_queue, publish
from tests.transports.webhooks.receiver import Receiver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

CREATE = """
mutation($queue: String!, $url: String!, $headers: JSON, $concurrency: Int) {
  createWebhook(queue: $queue, url: $url, headers: $headers, concurrency: $concurrency) {
    id url secret state concurrency timeoutMs headers
  }
}
"""
LIST = """
query($queue: String!) {
  webhooks(queue: $queue) { id secret state deliveries failures lastError
    recent { messageId status outcome latencyMs } }
}
"""


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allowed_hosts": ("127.0.0.1",)}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    endpoint = Receiver()
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


async def test_webhook_lifecycle(client: httpx.AsyncClient, receiver: Receiver) -> None:
    await make_queue(client)
    data = await data_of(
        client, CREATE, queue="jobs", url=receiver.url, headers={"x-a": "1"}, concurrency=2
    )
    hook = data["createWebhook"]
    assert hook["secret"].startswith("whsec_")
    assert (hook["state"], hook["concurrency"], hook["timeoutMs"]) == ("active", 2, 10000)
    receiver.use_secret(hook["secret"])
    await publish(client, {"k": 1})
    deadline = time.monotonic() + 10_000 * MS
    while True:
        [listed] = (await data_of(client, LIST, queue="jobs"))["webhooks"]
        if listed["deliveries"] == 1:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(20 * MS)
    assert listed["secret"] is None
    assert listed["recent"][0]["status"] == 200
    assert receiver.received[0].signed
    pause = """
    mutation($queue: String!, $id: String!, $paused: Boolean!) {
      pauseWebhook(queue: $queue, id: $id, paused: $paused) { state }
    }
    """
    data = await data_of(client, pause, queue="jobs", id=hook["id"], paused=True)
    assert data["pauseWebhook"]["state"] == "paused"
    data = await data_of(client, pause, queue="jobs", id=hook["id"], paused=False)
    assert data["pauseWebhook"]["state"] == "active"
    delete = 'mutation($id: String!) { deleteWebhook(queue: "jobs", id: $id) }'
    assert (await data_of(client, delete, id=hook["id"]))["deleteWebhook"] is True
    assert (await data_of(client, LIST, queue="jobs"))["webhooks"] == []
    error = await error_of(client, delete, id=hook["id"])
    assert error["extensions"]["code"] == "webhook_not_found"


async def test_bad_input_names_the_field(client: httpx.AsyncClient) -> None:
    await make_queue(client)
    error = await error_of(client, CREATE, queue="jobs", url="http://10.1.2.3/x")
    assert "url" in error["message"]
    error = await error_of(client, CREATE, queue="jobs", url="http://127.0.0.1/x", concurrency=0)
    assert "concurrency" in error["message"]

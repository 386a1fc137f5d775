"""The Python client's webhook methods against a real server and a real receiver."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import ADMIN_PASSWORD, MS
from tests.transports.webhooks.receiver import Receiver
from transports.client import Client
from transports.client.errors import RequestError

if TYPE_CHECKING:
    from tests.conftest import BrokerServer


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allowed_hosts": ("127.0.0.1",)}


async def test_client_webhooks(server: BrokerServer) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        async with Client(
            server.url, username="admin", password=ADMIN_PASSWORD, connect_timeout=5000 * MS
        ) as client:
            await client.create_queue("jobs")
            hook = await client.create_webhook("jobs", receiver.url, concurrency=2)
            assert hook.secret is not None
            receiver.use_secret(hook.secret)
            await client.publish("jobs", {"a": 1})
            deadline = time.monotonic() + 10_000 * MS
            while not receiver.received:
                assert time.monotonic() < deadline
                await asyncio.sleep(10 * MS)
            assert receiver.received[0].signed
            paused = await client.pause_webhook("jobs", hook.id)
            assert paused.state == "paused"
            [listed] = await client.list_webhooks("jobs")
            assert listed.secret is None
            await client.delete_webhook("jobs", hook.id)
            assert await client.list_webhooks("jobs") == []
            with pytest.raises(RequestError) as caught:
                await client.create_webhook("jobs", "http://10.0.0.1/x")
            assert caught.value.status == 422
    finally:
        await receiver.stop()

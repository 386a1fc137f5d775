"""The Python client's retries: a retry policy at creation, nack with delay, pause, cancel."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.conftest import ADMIN_PASSWORD, MS
from transports.client import Client, RequestError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.conftest import BrokerServer


@pytest.fixture
async def api(server: BrokerServer) -> AsyncIterator[Client]:
    """A client of ``server`` logged in as the admin."""
    async with Client(
        server.url, username="admin", password=ADMIN_PASSWORD, connect_timeout=5000 * MS
    ) as client:
        yield client


async def test_nack_with_delay_over_the_socket(api: Client) -> None:
    """`Message.nack(delay_ms=...)` on a pushed message: it comes back after the delay."""
    info = await api.create_queue("jobs", retry={"min_ms": 60_000})
    assert info.retry is not None and info.retry.min_ms == 60_000
    id = await api.publish("jobs", "x")
    async with api.subscribe("jobs", prefetch=1) as jobs:
        first = await jobs.get(5000 * MS)
        assert first is not None
        nacked = time.monotonic()
        await first.nack(delay_ms=300)
        again = await jobs.get(5000 * MS)
        assert again is not None
        assert time.monotonic() - nacked >= 0.29
        await again.ack()
    assert (again.message_id, again.attempt) == (id, 2)


async def test_pause_resume_cancel_and_reschedule(api: Client) -> None:
    """The client pauses and resumes a queue, cancels one message and reschedules another."""
    await api.create_queue("jobs")
    paused = await api.pause_queue("jobs")
    assert paused.paused is True
    keep = await api.publish("jobs", "keep", delay_ms=60_000)
    drop = await api.publish("jobs", "drop")
    await api.cancel_message("jobs", drop)
    with pytest.raises(RequestError) as ended:
        await api.cancel_message("jobs", drop)
    assert ended.value.status == 409  # it has ended (cancelled), kept for its history
    view = await api.reschedule_message("jobs", keep, delay_ms=0, priority=2)
    # Due now, it waits for the pause (`waiting` says why).
    assert (view["waiting"], view["priority"]) == ("paused", 2)
    assert await api.consume("jobs", wait=0.2) == []
    assert (await api.resume_queue("jobs")).paused is False
    [message] = await api.consume("jobs", wait=2)
    assert message.message_id == keep
    await message.nack(delay_ms=60_000)
    assert (await api.queue("jobs")).delayed == 1

"""The Python client's schedule calls against a real server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import ADMIN_PASSWORD
from transports.client import Client, RequestError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.conftest import BrokerServer


@pytest.fixture
async def api(server: BrokerServer) -> AsyncIterator[Client]:
    async with Client(server.url, username="admin", password=ADMIN_PASSWORD) as client:
        yield client


async def test_a_schedule_fires_and_is_managed_through_the_client(api: Client) -> None:
    """Create, see it fire, pause, resume, list and delete with the client's methods."""
    await api.create_queue("ticks")
    created = await api.create_schedule(
        "ticks", "tick", {"job": 1}, every_ms=1000, headers={"kind": "tick"}
    )
    assert created.every_ms == 1000 and created.next_fire_at is not None
    [message] = await api.consume("ticks", wait=5)
    assert message.headers is not None and message.headers["x-schedule"] == "tick"
    assert message.content == {"job": 1}
    await message.ack()
    assert (await api.pause_schedule("ticks", "tick")).paused
    assert not (await api.resume_schedule("ticks", "tick")).paused
    nightly = await api.create_schedule(
        "ticks", "nightly", "report", cron="0 3 * * *", timezone="Asia/Tokyo"
    )
    assert nightly.cron == "0 3 * * *"
    assert [s.name for s in await api.schedules("ticks")] == ["nightly", "tick"]
    assert (await api.schedule("ticks", "tick")).last_fired_at is not None
    await api.delete_schedule("ticks", "tick")
    with pytest.raises(RequestError) as caught:
        await api.schedule("ticks", "tick")
    assert caught.value.status == 404


async def test_a_bad_schedule_raises_with_the_field(api: Client) -> None:
    """A 422 from the broker is a `RequestError` naming the field."""
    await api.create_queue("ticks")
    with pytest.raises(RequestError) as caught:
        await api.create_schedule("ticks", "bad", 1, cron="not a cron")
    assert caught.value.status == 422 and "cron" in str(caught.value)

"""The `Scheduler` over a real broker and SQLite file: what a fire does when it can't be one."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from broker_core.errors import QueueNotFound, ScheduleExists, ScheduleNotFound
from broker_core.messages import CreateQueueRequest
from broker_core.scheduler import Scheduler
from broker_core.schedules import CreateScheduleRequest
from tests.conftest import MS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from broker_core.broker import Broker
    from storage import SQLiteStorage


def every_second(name: str = "tick") -> CreateScheduleRequest:
    body: dict[str, Any] = {"name": name, "every_ms": 1000, "content": {"n": 1}}
    return msgspec.json.decode(msgspec.json.encode(body), type=CreateScheduleRequest)


@pytest.fixture
async def scheduler(broker: Broker) -> AsyncIterator[Scheduler]:
    store = broker.storage.schedules  # type: ignore[attr-defined]
    async with Scheduler(broker, store) as running:
        yield running


async def pending(broker: Broker, queue: str = "q") -> int:
    return broker.info(queue).pending


async def test_a_schedule_paused_behind_its_back_does_not_fire(
    broker: Broker, scheduler: Scheduler
) -> None:
    """A pause made in storage (as by another node) stops fires: the claim refuses it."""
    await broker.create_queue(CreateQueueRequest(name="q"))
    await scheduler.create("q", every_second())
    storage: SQLiteStorage = broker.storage  # type: ignore[assignment]
    await storage.schedules.set_paused("q", "tick", True, broker.clock())
    await asyncio.sleep(2500 * MS)
    assert await pending(broker) == 0
    assert (await scheduler.get("q", "tick")).paused


async def test_a_refused_fire_is_skipped_and_the_next_one_lands(
    broker: Broker, scheduler: Scheduler
) -> None:
    """A full queue refuses a fire: that instant is skipped, not retried; later ones land."""
    await broker.create_queue(CreateQueueRequest(name="q", max_length=1))
    await scheduler.create("q", every_second())
    await asyncio.sleep(2500 * MS)
    assert await pending(broker) == 1
    await broker.purge("q")
    await asyncio.sleep(1500 * MS)
    assert await pending(broker) == 1


async def test_a_deleted_queue_takes_its_schedules(broker: Broker, scheduler: Scheduler) -> None:
    """The scheduler forgets a deleted queue's schedules; the queue's name is free again."""
    await broker.create_queue(CreateQueueRequest(name="q"))
    await scheduler.create("q", every_second())
    await broker.delete_queue("q")
    await asyncio.sleep(1500 * MS)
    with pytest.raises(QueueNotFound):
        await scheduler.list_views("q")
    await broker.create_queue(CreateQueueRequest(name="q"))
    assert await scheduler.list_views("q") == []
    await asyncio.sleep(1500 * MS)
    assert await pending(broker) == 0


async def test_names_are_unique_per_queue(broker: Broker, scheduler: Scheduler) -> None:
    """A taken name is `ScheduleExists`; an unknown one `ScheduleNotFound` for every call."""
    await broker.create_queue(CreateQueueRequest(name="q"))
    await scheduler.create("q", every_second())
    with pytest.raises(ScheduleExists):
        await scheduler.create("q", every_second())
    for call in (
        scheduler.get("q", "nope"),
        scheduler.set_paused("q", "nope", True),
        scheduler.delete("q", "nope"),
    ):
        with pytest.raises(ScheduleNotFound):
            await call

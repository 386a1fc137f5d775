"""Schedules in storage, on both backends: rows, fire records, claims, a deleted queue's cascade.

Reuses the contract suite's ``backend`` fixture (``sqlite`` and ``postgres``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

from broker_core.errors import QueueNotFound
from broker_core.journal import DeleteQueue, FireSchedule, Insert
from broker_core.schedules import CreateScheduleRequest, Schedule, new_schedule
from storage.coalesce import withdraw_publishes
from tests.storage import test_contract as contract
from tests.storage.test_contract import NOW, Backend, entry, put_queue, write

if TYPE_CHECKING:
    from tests.storage.test_contract import Storage

backend = contract.backend
storage = contract.storage


def schedule(name: str = "tick", queue: str = "q", **fields: object) -> Schedule:
    body = {"name": name, "every_ms": 1000, "content": {"n": 1}, **fields}
    request = msgspec.json.decode(msgspec.json.encode(body), type=CreateScheduleRequest)
    return new_schedule(queue, request, NOW)


async def test_a_schedule_is_stored_once_per_name(storage: Storage) -> None:
    """Insert, a taken name refused, read back whole, listed by queue and name."""
    await write(storage, put_queue("q"), put_queue("r"))
    tick = schedule(headers={"k": "v"}, priority=2, cron="0 3 * * *", every_ms=None,
                    timezone="Europe/Riga")  # fmt: skip
    assert await storage.schedules.insert(tick)
    assert not await storage.schedules.insert(schedule())
    assert await storage.schedules.insert(schedule("other", "r"))
    assert await storage.schedules.get("q", "tick") == tick
    assert [(s.queue, s.name) for s in await storage.schedules.load()] == [
        ("q", "tick"),
        ("r", "other"),
    ]
    assert [s.name for s in await storage.schedules.load("r")] == ["other"]
    with pytest.raises(QueueNotFound):
        await storage.schedules.insert(schedule(queue="missing"))


async def test_pause_resume_and_delete(storage: Storage) -> None:
    """A pause is kept; a resume records when (no catch-up before it); delete says if it was."""
    await write(storage, put_queue("q"))
    await storage.schedules.insert(schedule())
    paused = await storage.schedules.set_paused("q", "tick", True, NOW + 5)
    assert paused is not None and paused.paused and paused.resumed_at == 0.0
    resumed = await storage.schedules.set_paused("q", "tick", False, NOW + 9)
    assert resumed is not None and not resumed.paused and resumed.resumed_at == NOW + 9
    again = await storage.schedules.set_paused("q", "tick", False, NOW + 20)
    assert again is not None and again.resumed_at == NOW + 9  # it was not paused
    assert await storage.schedules.set_paused("q", "nope", True, NOW) is None
    assert await storage.schedules.delete("q", "tick")
    assert not await storage.schedules.delete("q", "tick")
    assert await storage.schedules.get("q", "tick") is None


async def test_a_fire_commits_with_its_message(storage: Storage) -> None:
    """``FireSchedule`` in the batch of the message's insert records the instant."""
    await write(storage, put_queue("q"))
    await storage.schedules.insert(schedule())
    await write(storage, Insert("q", entry(1)), FireSchedule("q", "tick", NOW + 1, 1))
    stored = await storage.schedules.get("q", "tick")
    assert stored is not None and stored.last_fired == NOW + 1
    assert await storage.get_message(1) is not None
    assert not await storage.schedules.claim("q", "tick", NOW + 1)
    assert await storage.schedules.claim("q", "tick", NOW + 2)


async def test_a_paused_or_missing_schedule_is_not_claimed(storage: Storage) -> None:
    """A claim refuses a paused schedule and one that is gone."""
    await write(storage, put_queue("q"))
    await storage.schedules.insert(schedule())
    await storage.schedules.set_paused("q", "tick", True, NOW)
    assert not await storage.schedules.claim("q", "tick", NOW + 1)
    assert not await storage.schedules.claim("q", "nope", NOW + 1)


async def test_a_deleted_queue_takes_its_schedules(storage: Storage) -> None:
    """Deleting a queue deletes its schedules in the same batch."""
    await write(storage, put_queue("q"), put_queue("r"))
    await storage.schedules.insert(schedule())
    await storage.schedules.insert(schedule(queue="r"))
    await write(storage, DeleteQueue("q"))
    assert [s.queue for s in await storage.schedules.load()] == ["r"]


def test_a_withdrawn_publish_takes_its_fire_record() -> None:
    """A batch whose publishes are withdrawn keeps no fire record (it is never stored alone)."""
    ops = [Insert("q", entry(7)), FireSchedule("q", "tick", NOW, 7)]
    kept, ids = withdraw_publishes(ops)
    assert ids == {7}
    assert not any(isinstance(op, FireSchedule) for op in kept)


@pytest.mark.postgres
async def test_two_nodes_claim_each_instant_once(backend: Backend) -> None:
    """Two nodes on one database: one wins an instant; a later one is open again."""
    if backend.kind != "postgres":
        pytest.skip("one SQLite file has one node")
    first, second = await backend.open(), await backend.open()
    await write(first, put_queue("q"))
    await first.schedules.insert(schedule())
    assert await first.schedules.claim("q", "tick", NOW + 1)
    assert not await second.schedules.claim("q", "tick", NOW + 1)
    assert await first.schedules.claim("q", "tick", NOW + 1)  # its own, again (a retry)
    assert await second.schedules.claim("q", "tick", NOW + 2)
    assert not await first.schedules.claim("q", "tick", NOW + 1)  # passed


@pytest.mark.postgres
async def test_a_second_message_for_a_fired_instant_is_taken_back(backend: Backend) -> None:
    """A batch firing an instant already fired deletes its own message in its transaction."""
    if backend.kind != "postgres":
        pytest.skip("one SQLite file has one node, whose scheduler fires sequentially")
    first, second = await backend.open(), await backend.open()
    await write(first, put_queue("q"))
    await first.schedules.insert(schedule())
    await write(first, Insert("q", entry(1)), FireSchedule("q", "tick", NOW + 1, 1))
    await write(second, Insert("q", entry(2)), FireSchedule("q", "tick", NOW + 1, 2))
    assert await second.get_message(1) is not None
    assert await second.get_message(2) is None
    stored = await second.schedules.get("q", "tick")
    assert stored is not None and stored.last_fired == NOW + 1

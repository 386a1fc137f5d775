"""Tests of `QueueActor` on a real event loop with a real SQLite storage."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from broker_core.actor import QueueActor, QueueDeleted
from broker_core.errors import Unavailable
from broker_core.journal import DeliverOp, Insert, PutQueue
from broker_core.messages import Entry, PublishRequest, QueueOptions
from broker_core.pending import BodyBudget
from broker_core.queue import QueueState
from storage import SQLiteStorage
from tests.conftest import MS
from tests.core.helpers import Sink

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from broker_core.journal import Op
    from broker_core.pending import Item
    from broker_core.queue import Published


class Hooks:
    """Records what actors tell the broker."""

    def __init__(self) -> None:
        self.dead: list[tuple[str, list[Item]]] = []
        self.ops: list[Op] = []
        self.withdrawn_ids: list[int] = []

    def dead_letter(self, target: str, items: list[Item]) -> None:
        self.dead.append((target, items))

    def history(self, queue: str, ops: Sequence[Op], now: float) -> Op | None:
        return None

    def ops_written(self, queue: str, ops: Sequence[Op]) -> None:
        self.ops.extend(ops)

    def withdrawn(self, queue: str, entries: list[Entry]) -> None:
        self.withdrawn_ids.extend(entry.id for entry in entries)


class Rig:
    """Starts actors over one storage and stops them after the test."""

    def __init__(self, storage: SQLiteStorage) -> None:
        self.storage = storage
        self.hooks = Hooks()
        self.actors: list[QueueActor] = []
        self.last_id = 0

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id

    async def start(self, name: str = "q", budget: int = 1 << 20, **options: Any) -> QueueActor:
        queue_options = QueueOptions(**options)
        await self.storage.write([PutQueue(name, queue_options, 0.0, 0.0)])
        state = QueueState(name, queue_options, budget=BodyBudget(budget))
        actor = QueueActor(state, self.storage, self.hooks)
        actor.start()
        self.actors.append(actor)
        return actor

    def publish(
        self, actor: QueueActor, *bodies: bytes, **fields: Any
    ) -> asyncio.Future[list[Published]]:
        requests = [PublishRequest(content=msgspec.Raw(body), **fields) for body in bodies]
        return actor.call(
            lambda state, now: state.publish(requests, now, self.next_id), durable=True
        )

    async def stop(self) -> None:
        for actor in self.actors:
            await actor.stop()


@pytest.fixture
async def rig(storage: SQLiteStorage) -> AsyncIterator[Rig]:
    rig = Rig(storage)
    yield rig
    await rig.stop()


def committed_ids(path: Path) -> list[int]:
    """Message ids committed to the database file, read by a separate connection."""
    with closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT id FROM messages ORDER BY id")]


async def test_publish_resolves_only_after_commit(db_path: Path) -> None:
    """A durable publish's future is done only once its Insert is in the file."""
    storage = SQLiteStorage(db_path, linger_ms=100 * MS * 1000)
    await storage.open()
    rig = Rig(storage)
    try:
        actor = await rig.start()
        future = rig.publish(actor, b'"a"')
        await asyncio.sleep(30 * MS)
        assert not future.done()
        assert committed_ids(db_path) == []
        [published] = await future
        assert committed_ids(db_path) == [published.id]
    finally:
        await rig.stop()
        await storage.close()


async def test_publish_answers_ids_in_order(rig: Rig) -> None:
    """A batch publish answers its messages' ids in request order."""
    actor = await rig.start()
    published = await rig.publish(actor, b"1", b"2", b"3")
    assert [p.id for p in published] == [1, 2, 3]
    assert actor.state.pending_count == 3


async def test_consumer_gets_pushed_deliveries_within_prefetch(rig: Rig) -> None:
    """A push consumer receives messages through its sink, never past its prefetch."""
    actor = await rig.start()
    sink = Sink()
    await actor.add_consumer(1, 2, sink)
    await rig.publish(actor, b"1", b"2", b"3")
    await sink.wait_for(2)
    await asyncio.sleep(10 * MS)
    assert sink.ids == [1, 2]
    await actor.call(lambda state, now: state.ack([1], now, consumer_id=1))
    await sink.wait_for(3)
    assert sink.ids == [1, 2, 3]
    assert [e.attempt for e in sink.entries] == [1, 1, 1]


async def test_remove_consumer_requeues_what_it_held(rig: Rig) -> None:
    """Removing a consumer gives its messages to the next one, redelivered."""
    actor = await rig.start()
    first, second = Sink(), Sink()
    await actor.add_consumer(1, 5, first)
    await rig.publish(actor, b"1", b"2")
    await first.wait_for(2)
    assert await actor.remove_consumer(1) == 2
    await actor.add_consumer(2, 5, second)
    entries = await second.wait_for(2)
    assert [(e.id, e.attempt, e.redelivered) for e in entries] == [(1, 2, True), (2, 2, True)]


async def test_pull_long_poll_returns_when_a_message_arrives(rig: Rig) -> None:
    """A waiting pull is served by the next publish."""
    actor = await rig.start()
    pulling = asyncio.ensure_future(actor.pull(5, None, 5000 * MS))
    await asyncio.sleep(20 * MS)
    assert not pulling.done()
    await rig.publish(actor, b'"hello"')
    async with asyncio.timeout(1000 * MS):
        entries = await pulling
    assert [(e.id, e.content) for e in entries] == [(1, b'"hello"')]
    assert 1 in actor.state.processing


async def test_pull_returns_nothing_after_wait(rig: Rig) -> None:
    """A pull with nothing to take returns [] once ``wait`` has passed."""
    actor = await rig.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await actor.pull(1, None, 50 * MS) == []
    assert loop.time() - started >= 45 * MS


async def test_pull_without_wait_returns_at_once(rig: Rig) -> None:
    """A pull with wait 0 on an empty queue answers immediately."""
    actor = await rig.start()
    async with asyncio.timeout(100 * MS):
        assert await actor.pull(1, None, 0) == []


async def test_timed_out_pulls_leave_no_waiters(rig: Rig) -> None:
    """Long polls that time out on an idle queue don't pile up."""
    actor = await rig.start()
    for _ in range(5):
        assert await actor.pull(1, None, 5 * MS) == []
    assert actor.waiting == 0


async def test_cancelled_pull_does_not_take_messages(rig: Rig) -> None:
    """A long poll whose caller went away leases nothing when a message arrives."""
    actor = await rig.start()
    pulling = asyncio.ensure_future(actor.pull(1, None, 5000 * MS))
    await asyncio.sleep(10 * MS)
    pulling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pulling
    await rig.publish(actor, b"1")
    [entry] = await actor.pull(1, None, 1000 * MS)
    assert (entry.id, entry.attempt) == (1, 1)


async def test_lease_expiry_requeues_via_the_timer(rig: Rig) -> None:
    """When a lease runs out, the actor's timer puts the message back for the next pull."""
    actor = await rig.start()
    await rig.publish(actor, b"1")
    [first] = await actor.pull(1, 200 * MS, 0)
    assert first.attempt == 1
    async with asyncio.timeout(2000 * MS):
        [again] = await actor.pull(1, None, 2000 * MS)
    assert (again.id, again.attempt, again.redelivered) == (1, 2, True)


async def test_touch_keeps_a_lease_alive(rig: Rig) -> None:
    """A touched lease doesn't expire at its first deadline."""
    actor = await rig.start()
    await rig.publish(actor, b"1")
    await actor.pull(1, 100 * MS, 0)
    await actor.call(lambda state, now: state.touch(1, 5.0, now))
    await asyncio.sleep(200 * MS)
    assert 1 in actor.state.processing


async def test_delayed_message_is_released_by_the_timer(rig: Rig) -> None:
    """A delayed message reaches a waiting pull when its delay ends."""
    actor = await rig.start()
    await rig.publish(actor, b"1", delay_ms=100)
    assert await actor.pull(1, None, 0) == []
    async with asyncio.timeout(2000 * MS):
        [entry] = await actor.pull(1, None, 2000 * MS)
    assert entry.id == 1


async def test_dead_letters_go_to_the_hooks(rig: Rig) -> None:
    """A rejected message with a dead-letter queue is handed to the broker."""
    actor = await rig.start(dead_letter_queue="dlq")
    await rig.publish(actor, b"1")
    await actor.pull(1, None, 0)
    await actor.call(lambda state, now: state.nack([1], now, requeue=False, reason="bad"))
    [(target, [item])] = rig.hooks.dead
    assert target == "dlq"
    assert isinstance(item, Entry)
    assert (item.id, item.dead_lettered_from) == (1, "q")


async def test_ops_reach_storage_and_hooks_in_order(rig: Rig) -> None:
    """Each turn's operations are written to storage and shown to the hooks."""
    actor = await rig.start()
    await rig.publish(actor, b"1")
    await actor.pull(1, None, 0)
    assert [type(op) for op in rig.hooks.ops] == [Insert, DeliverOp]
    await rig.storage.flush()
    row = await rig.storage.get_message(1)
    assert row is not None
    assert row.entry.attempt == 1


async def test_command_error_fails_only_its_future(rig: Rig) -> None:
    """An exception in a command goes to its caller; the actor keeps running."""
    actor = await rig.start()

    def broken(state: QueueState, now: float) -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await actor.call(broken)
    assert [p.id for p in await rig.publish(actor, b"1")] == [1]


async def test_stop_with_reason_fails_pending_calls(rig: Rig) -> None:
    """Stopping for a deleted queue fails waiting pulls and every later call."""
    actor = await rig.start()
    pulling = asyncio.ensure_future(actor.pull(1, None, 5000 * MS))
    await asyncio.sleep(10 * MS)
    await actor.stop(QueueDeleted("q"))
    with pytest.raises(QueueDeleted):
        await pulling
    with pytest.raises(QueueDeleted):
        await actor.call(lambda state, now: None)
    with pytest.raises(QueueDeleted):
        actor.apply_now(lambda state, now: None)


async def test_stop_finishes_queued_commands(rig: Rig) -> None:
    """A plain stop runs what is already in the mailbox first."""
    actor = await rig.start()
    future = rig.publish(actor, b"1")
    await actor.stop()
    assert [p.id for p in await future] == [1]


async def test_cold_backlog_is_loaded_and_delivered_in_order(rig: Rig) -> None:
    """With a tiny body budget, bodies are loaded from storage as consumers take them."""
    actor = await rig.start(budget=16)
    bodies = [b'"%03d"' % i for i in range(40)]
    await rig.publish(actor, *bodies)
    sink = Sink()
    await actor.add_consumer(1, 3, sink)
    for count in range(3, 41, 3):
        await sink.wait_for(count)
        held = sink.ids[count - 3 : count]
        await actor.call(lambda state, now, h=held: state.ack(h, now, consumer_id=1))  # type: ignore[misc]
    await sink.wait_for(40)
    assert [e.content for e in sink.entries] == bodies
    assert actor.state.budget.used <= 16 + 3 * 5


async def test_pull_waits_for_cold_bodies(rig: Rig) -> None:
    """A pull without wait still gets a message whose body must be loaded first."""
    actor = await rig.start(budget=0)
    await rig.publish(actor, b"1", b"2")
    async with asyncio.timeout(2000 * MS):
        entries = await actor.pull(2, None, 0)
    assert [e.id for e in entries] == [1, 2]


async def test_context_manager_starts_and_stops(storage: SQLiteStorage) -> None:
    """`async with QueueActor(...)` runs the actor for the block."""
    state = QueueState("q", QueueOptions(), budget=BodyBudget(1 << 20))
    async with QueueActor(state, storage, Hooks()) as actor:
        assert await actor.call(lambda state, now: state.name) == "q"
    with pytest.raises(QueueDeleted):
        await actor.call(lambda state, now: state.name)


async def test_a_failing_sink_does_not_confirm_an_uncommitted_publish(db_path: Path) -> None:
    """A sink that raises neither skips the journal write nor confirms early."""
    storage = SQLiteStorage(db_path, linger_ms=50 * MS * 1000)
    await storage.open()
    rig = Rig(storage)
    try:
        actor = await rig.start()

        def broken(queue: str, entries: list[Entry]) -> None:
            raise RuntimeError("sink bug")

        await actor.add_consumer(1, 5, broken)
        [published] = await rig.publish(actor, b"1")
        assert committed_ids(db_path) == [published.id]
        assert [p.id for p in await rig.publish(actor, b"2")] == [2]
    finally:
        await rig.stop()
        await storage.close()


async def test_duplicate_publish_waits_for_the_original_commit(db_path: Path) -> None:
    """A deduplicated publish is confirmed only once the first message is committed."""
    storage = SQLiteStorage(db_path, linger_ms=100 * MS * 1000)
    await storage.open()
    rig = Rig(storage)
    try:
        actor = await rig.start()
        original = rig.publish(actor, b"1", dedup_id="k")
        await asyncio.sleep(10 * MS)
        [duplicate] = await rig.publish(actor, b"1", dedup_id="k")
        assert duplicate.duplicate
        assert committed_ids(db_path) == [duplicate.id]
        await original
    finally:
        await rig.stop()
        await storage.close()


async def test_apply_now_rearms_the_timer(rig: Rig) -> None:
    """A delayed message published with apply_now (fan-out) is released on time."""
    actor = await rig.start()
    sink = Sink()
    await actor.add_consumer(1, 5, sink)
    await asyncio.sleep(10 * MS)
    requests = [PublishRequest(content=msgspec.Raw(b"1"), delay_ms=50)]
    _, commit = actor.apply_now(lambda state, now: state.publish(requests, now, rig.next_id))
    assert commit is not None
    await commit
    [entry] = await sink.wait_for(1)
    assert entry.id == 1


async def test_stop_with_reason_fails_commands_still_queued(rig: Rig) -> None:
    """Commands queued before a deletion fail with QueueDeleted instead of running."""
    actor = await rig.start()
    future = rig.publish(actor, b"1")
    await actor.stop(QueueDeleted("q"))
    with pytest.raises(QueueDeleted):
        await future
    assert actor.state.pending_count == 0


async def test_casts_after_stop_are_ignored(rig: Rig) -> None:
    """A cast to a stopped actor does nothing."""
    actor = await rig.start()
    await actor.stop()
    actor.cast(lambda state, now: state.purge())
    assert actor.backlog == 0


async def test_a_failing_cast_is_logged_and_the_actor_goes_on(rig: Rig) -> None:
    """An exception in a cast command is logged; later commands still run."""
    actor = await rig.start()

    def broken(state: QueueState, now: float) -> None:
        raise ValueError("nope")

    actor.cast(broken)
    assert [p.id for p in await rig.publish(actor, b"1")] == [1]


async def test_publish_fails_when_its_batch_fails_to_commit(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish whose batch can't commit raises Unavailable (storage retries behind it)."""
    actor = await rig.start()
    writer = rig.storage.writer
    real_commit = writer.commit
    failures = ["COMMIT"]

    def flaky_commit(db: sqlite3.Connection, ops: list[Op]) -> None:
        if failures:
            failures.pop()
            raise sqlite3.OperationalError("database or disk is full")
        real_commit(db, ops)

    monkeypatch.setattr(writer, "commit", flaky_commit)
    with pytest.raises(Unavailable):
        await rig.publish(actor, b"1")
    assert [p.id for p in await rig.publish(actor, b"2")] == [2]
    assert rig.storage.degraded is None


async def test_failed_body_load_is_retried(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """When loading cold bodies fails, the actor asks again and delivers."""
    actor = await rig.start(budget=0)
    await rig.publish(actor, b"1")
    db = rig.storage.reader
    real_execute = db.execute
    failures = ["load"]

    def flaky_execute(sql: str, *args: Any) -> Any:
        if failures and "WHERE id IN" in sql:
            failures.pop()
            raise sqlite3.OperationalError("disk I/O error")
        return real_execute(sql, *args)

    monkeypatch.setattr(db, "execute", flaky_execute)
    async with asyncio.timeout(3000 * MS):
        [entry] = await actor.pull(1, None, 3000 * MS)
    assert (entry.id, entry.content) == (1, b"1")
    assert failures == []

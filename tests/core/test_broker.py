"""Tests of `Broker` on a real event loop over a real SQLite file, restarts included."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from broker_core.actor import QueueDeleted
from broker_core.broker import Broker
from broker_core.errors import (
    InvalidName,
    InvalidTransition,
    MessageNotFound,
    QueueExists,
    QueueFull,
    QueueInUse,
    QueueLimitReached,
    QueueNotFound,
    Unavailable,
)
from broker_core.messages import (
    CreateQueueRequest,
    PublishRequest,
    QueueEvent,
    UpdateQueueRequest,
)
from broker_core.types import MessageStatus, Overflow
from storage import SQLiteStorage
from tests.conftest import MS
from tests.core.helpers import Sink

if TYPE_CHECKING:
    from pathlib import Path


def msg(content: bytes = b'"m"', **fields: Any) -> PublishRequest:
    return PublishRequest(content=msgspec.Raw(content), **fields)


async def create(broker: Broker, name: str = "q", **options: Any) -> None:
    await broker.create_queue(CreateQueueRequest(name=name, **options))


async def publish(broker: Broker, queue: str, *bodies: bytes, **fields: Any) -> list[int]:
    results = await broker.publish(queue, [msg(body, **fields) for body in bodies])
    return [r.message_id for r in results]


async def barrier(broker: Broker, name: str) -> None:
    """Wait until ``name``'s actor has run everything cast to it so far (dead letters)."""
    await broker.actor(name).call(lambda state, now: None)


def committed_ids(path: Path) -> list[int]:
    """Message ids committed to the database file, read by a separate connection."""
    with closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT id FROM messages ORDER BY id")]


async def restart(broker: Broker, **options: Any) -> Broker:
    """Close ``broker`` cleanly and start a new one on the same file."""
    await broker.close()
    assert isinstance(broker.storage, SQLiteStorage)
    again = Broker(SQLiteStorage(broker.storage.path), **options)
    await again.start()
    return again


async def crash(broker: Broker) -> None:
    """Stop ``broker`` like ``kill -9``: no drain, no flush, no clean mark.

    Committed batches stay; operations still in the write-behind buffer are lost.
    Storage goes first, as the process would: the broker's close afterwards
    reaches nothing on disk.
    """
    storage = broker.storage
    assert isinstance(storage, SQLiteStorage)
    await storage.crash()
    await broker.close()


# -- queues ---------------------------------------------------------------------------------------


async def test_create_queue_shows_options_and_zero_counts(broker: Broker) -> None:
    """A new queue has its options and no messages."""
    info = await broker.create_queue(CreateQueueRequest(name="q", max_attempts=3, lease=5.0))
    assert (info.name, info.max_attempts, info.lease) == ("q", 3, 5.0)
    assert (info.pending, info.processing, info.processed, info.failed) == (0, 0, 0, 0)
    assert broker.queue_names() == ["q"]


async def test_create_existing_queue_is_refused(broker: Broker) -> None:
    """A second queue with the same name raises QueueExists."""
    await create(broker)
    with pytest.raises(QueueExists):
        await create(broker)


async def test_create_queue_checks_name_and_limit(db_path: Path) -> None:
    """Bad names and queues past max_queues are refused."""
    async with Broker(SQLiteStorage(db_path), max_queues=1) as broker:
        with pytest.raises(InvalidName):
            await broker.create_queue(CreateQueueRequest(name="no spaces"))
        await create(broker, "a")
        with pytest.raises(QueueLimitReached):
            await create(broker, "b")


async def test_dead_letter_queue_must_exist(broker: Broker) -> None:
    """A queue can't name a dead-letter queue that doesn't exist."""
    with pytest.raises(QueueNotFound):
        await create(broker, dead_letter_queue="missing")


async def test_unknown_queue_is_queue_not_found(broker: Broker) -> None:
    """Operations on a queue that doesn't exist raise QueueNotFound."""
    with pytest.raises(QueueNotFound):
        await publish(broker, "nope", b"1")
    with pytest.raises(QueueNotFound):
        broker.info("nope")


async def test_update_queue_changes_options(broker: Broker) -> None:
    """PATCH-style updates change only the fields they set."""
    await create(broker, max_attempts=3)
    info = await broker.update_queue("q", UpdateQueueRequest(lease=7.0))
    assert (info.max_attempts, info.lease) == (3, 7.0)
    [stored] = await broker.storage.load_queues()
    assert stored.options.lease == 7.0


# -- publish and consume --------------------------------------------------------------------------


async def test_publish_resolves_only_after_commit(broker: Broker, db_path: Path) -> None:
    """When publish returns, the message is committed to the file."""
    await create(broker)
    [id] = await publish(broker, "q", b'"x"')
    assert committed_ids(db_path) == [id]


async def test_publish_result_says_pending_and_duplicate(broker: Broker) -> None:
    """A publish answers pending; a repeated dedup_id answers the first id as a duplicate."""
    await create(broker)
    [first] = await broker.publish("q", [msg(dedup_id="k")])
    [again] = await broker.publish("q", [msg(dedup_id="k")])
    assert (first.status, first.duplicate, first.queue) == ("pending", False, "q")
    assert (again.message_id, again.duplicate) == (first.message_id, True)
    assert broker.info("q").pending == 1


async def test_full_queue_rejects_publish(broker: Broker) -> None:
    """reject_publish answers QueueFull and stores nothing."""
    await create(broker, max_length=1)
    await publish(broker, "q", b"1")
    with pytest.raises(QueueFull):
        await publish(broker, "q", b"2")
    assert broker.info("q").pending == 1


async def test_publish_each_refuses_only_what_no_longer_fits(broker: Broker) -> None:
    """Publishes queued one by one: a full queue refuses those past its limit, not the others."""
    await create(broker, max_length=2)
    outcomes = await broker.publish_each_nowait("q", [msg(b"1"), msg(b"2"), msg(b"3")])
    kinds = [type(outcome).__name__ for outcome in outcomes]
    assert kinds == ["Published", "Published", "QueueFull"]
    assert broker.info("q").pending == 2


async def test_subscriber_gets_pushed_deliveries_and_acks(broker: Broker) -> None:
    """A subscriber receives messages within its prefetch and acks them."""
    await create(broker)
    sink = Sink()
    consumer = await broker.subscribe("q", 2, sink, label="test consumer")
    ids = await publish(broker, "q", b"1", b"2", b"3")
    await sink.wait_for(2)
    assert broker.info("q").processing == 2
    outcome = await broker.consumer_ack("q", consumer, ids[:1])
    assert outcome.settled == ids[:1]
    await sink.wait_for(3)
    assert sink.ids == ids
    [row] = broker.consumers()
    assert (row.queue, row.label, row.prefetch, row.unacked) == ("q", "test consumer", 2, 2)
    assert row.oldest_lease_held_s is not None
    assert row.oldest_lease_held_s >= 0


async def test_subscriber_cannot_ack_another_ones_message(broker: Broker) -> None:
    """consumer_ack of a message held by another consumer is an error, not an ack."""
    await create(broker)
    first, second = Sink(), Sink()
    await broker.subscribe("q", 1, first)
    other = await broker.subscribe("q", 1, second)
    await publish(broker, "q", b"1")
    [entry] = await first.wait_for(1)
    outcome = await broker.consumer_ack("q", other, [entry.id])
    assert outcome.settled == []
    assert entry.id in outcome.errors


async def test_unsubscribe_requeues_held_messages(broker: Broker) -> None:
    """A consumer that leaves gives its messages back, marked redelivered."""
    await create(broker)
    sink = Sink()
    consumer = await broker.subscribe("q", 5, sink)
    await publish(broker, "q", b"1", b"2")
    await sink.wait_for(2)
    assert await broker.unsubscribe("q", consumer) == 2
    views = await broker.pull("q", 5, 0, None)
    assert [(v.attempt, v.redelivered) for v in views] == [(2, True), (2, True)]


async def test_consumer_nack_without_requeue_fails(broker: Broker) -> None:
    """A consumer's nack without requeue fails the message."""
    await create(broker)
    sink = Sink()
    consumer = await broker.subscribe("q", 1, sink)
    [id] = await publish(broker, "q", b"1")
    await sink.wait_for(1)
    outcome = await broker.consumer_nack("q", consumer, [id], requeue=False, reason="bad")
    assert outcome.settled == [id]
    assert broker.info("q").failed == 1


async def test_pull_long_poll_returns_when_a_message_arrives(broker: Broker) -> None:
    """A REST long poll is answered by a publish that arrives while it waits."""
    await create(broker)
    pulling = asyncio.ensure_future(broker.pull("q", 1, 5000 * MS, None))
    await asyncio.sleep(20 * MS)
    assert not pulling.done()
    [id] = await publish(broker, "q", b'{"a": 1}')
    async with asyncio.timeout(1000 * MS):
        [view] = await pulling
    assert (view.message_id, view.status, view.attempt, view.redelivered) == (
        id,
        "processing",
        1,
        False,
    )
    assert bytes(view.content) == b'{"a": 1}'
    assert view.lease_expires_at is not None


async def test_pull_returns_nothing_after_wait(broker: Broker) -> None:
    """A long poll on an empty queue returns [] after ``wait``."""
    await create(broker)
    assert await broker.pull("q", 1, 30 * MS, None) == []


async def test_ack_and_nack_by_id(broker: Broker) -> None:
    """Pulled messages are settled by id alone; unknown ids are reported."""
    await create(broker)
    ids = await publish(broker, "q", b"1", b"2")
    await broker.pull("q", 2, 0, None)
    assert broker.queue_of(ids[0]) == "q"
    acked = await broker.ack([ids[0], 999])
    assert acked.settled == [ids[0]]
    assert list(acked.errors) == ["999"]
    nacked = await broker.nack([ids[1]], requeue=True)
    assert nacked.settled == [ids[1]]
    info = broker.info("q")
    assert (info.pending, info.processing, info.processed) == (1, 0, 1)
    assert broker.queue_of(ids[0]) is None


async def test_settle_respects_allowed(broker: Broker) -> None:
    """An ack for a queue the caller may not use is refused."""
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    await broker.pull("q", 1, 0, None)
    result = await broker.ack([id], allowed=lambda queue: False)
    assert result.settled == []
    assert broker.info("q").processing == 1


async def test_lease_expiry_requeues_via_the_actor_timer(broker: Broker) -> None:
    """A pulled message whose short lease runs out is delivered again."""
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    await broker.pull("q", 1, 0, 200 * MS)
    async with asyncio.timeout(2000 * MS):
        [again] = await broker.pull("q", 1, 2000 * MS, None)
    assert (again.message_id, again.attempt, again.redelivered) == (id, 2, True)


async def test_touch_extends_a_lease(broker: Broker) -> None:
    """touch moves a held lease's deadline; unknown ids are InvalidTransition."""
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    [view] = await broker.pull("q", 1, 0, 1.0)
    deadline = await broker.touch(id, 60.0)
    assert view.lease_expires_at is not None
    assert deadline > view.lease_expires_at.timestamp() + 50
    with pytest.raises(InvalidTransition):
        await broker.touch(999, 5.0)


# -- dead letters, retry and redrive --------------------------------------------------------------


async def test_dead_letters_are_routed_to_another_queue(broker: Broker) -> None:
    """A message that used up max_attempts lands in the dead-letter queue."""
    await create(broker, "dlq")
    await create(broker, "q", max_attempts=1, dead_letter_queue="dlq")
    [id] = await publish(broker, "q", b'"poison"')
    await broker.pull("q", 1, 0, None)
    await broker.nack([id], requeue=True, reason="crashed")
    async with asyncio.timeout(1000 * MS):
        [view] = await broker.pull("dlq", 1, 1000 * MS, None)
    assert (view.message_id, view.queue, view.attempt) == (id, "dlq", 1)
    assert view.dead_lettered_from == "q"
    assert broker.info("q").pending == 0
    row = await broker.storage.get_message(id)
    assert row is not None
    assert row.queue == "dlq"


async def test_expired_messages_are_dead_lettered_and_kept(broker: Broker) -> None:
    """A message that expires in a queue with a dead-letter queue stays in that queue."""
    await create(broker, "dlq")
    await create(broker, "q", message_ttl_ms=50, dead_letter_queue="dlq")
    [id] = await publish(broker, "q", b"1")
    async with asyncio.timeout(2000 * MS):
        [view] = await broker.pull("dlq", 1, 2000 * MS, None)
    assert (view.message_id, view.dead_lettered_from, view.last_error) == (id, "q", "expired")


async def test_delete_queue_used_as_dead_letter_queue_is_refused(broker: Broker) -> None:
    """A queue another queue dead-letters into can't be deleted."""
    await create(broker, "dlq")
    await create(broker, "q", dead_letter_queue="dlq")
    with pytest.raises(QueueInUse):
        await broker.delete_queue("dlq")
    assert "dlq" in broker.queue_names()


async def test_retry_moves_a_failed_message_back_to_pending(broker: Broker) -> None:
    """retry puts a failed message back in its queue with its attempts reset."""
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    await broker.pull("q", 1, 0, None)
    await broker.nack([id], requeue=False)
    assert broker.info("q").failed == 1
    view = await broker.retry("q", id)
    assert (view.status, view.attempt) == ("pending", 0)
    assert (broker.info("q").failed, broker.info("q").pending) == (0, 1)
    [again] = await broker.pull("q", 1, 0, None)
    assert (again.message_id, again.attempt) == (id, 1)


async def test_retry_of_an_expired_message_delivers_it(broker: Broker) -> None:
    """A retried message whose TTL had passed is delivered, not dropped again."""
    await create(broker, "q", message_ttl_ms=round(200 * MS * 1000))
    [id] = await publish(broker, "q", b"1")
    await broker.pull("q", 1, 0, None)
    await broker.nack([id], requeue=False)
    await asyncio.sleep(300 * MS)
    await broker.retry("q", id)
    [again] = await broker.pull("q", 1, 500 * MS, None)
    assert again.message_id == id


async def test_retry_of_a_pending_message_is_invalid(broker: Broker) -> None:
    """Only failed or dead-lettered messages can be retried."""
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    with pytest.raises(InvalidTransition):
        await broker.retry("q", id)
    with pytest.raises(MessageNotFound):
        await broker.retry("q", 999)


async def test_redrive_returns_dead_letters_to_their_origin(broker: Broker) -> None:
    """redrive moves every dead-lettered message back to the queue it came from."""
    await create(broker, "dlq")
    await create(broker, "q", dead_letter_queue="dlq")
    ids = await publish(broker, "q", b"1", b"2", b"3")
    await broker.pull("q", 3, 0, None)
    await broker.nack(ids, requeue=False)
    await barrier(broker, "dlq")
    assert broker.info("dlq").pending == 3
    assert await broker.redrive("dlq") == 3
    assert (broker.info("dlq").pending, broker.info("q").pending) == (0, 3)
    views = await broker.pull("q", 3, 0, None)
    assert sorted(v.message_id for v in views) == ids
    assert all(v.dead_lettered_from is None for v in views)


# -- purge, delete, fan-out -----------------------------------------------------------------------


async def test_purge_deletes_pending_not_processing(broker: Broker) -> None:
    """Purge removes waiting messages and keeps leased ones."""
    await create(broker)
    ids = await publish(broker, "q", b"1", b"2", b"3")
    await broker.pull("q", 1, 0, None)
    assert await broker.purge("q") == 2
    info = broker.info("q")
    assert (info.pending, info.processing) == (0, 1)
    assert [await broker.storage.get_message(i) is None for i in ids] == [False, True, True]


async def test_delete_queue_fails_pending_calls(broker: Broker) -> None:
    """Deleting a queue fails its waiting long polls with QueueDeleted and drops its messages."""
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    await broker.pull("q", 1, 0, None)
    pulling = asyncio.ensure_future(broker.pull("q", 1, 5000 * MS, None))
    await asyncio.sleep(20 * MS)
    await broker.delete_queue("q")
    with pytest.raises(QueueDeleted):
        await pulling
    with pytest.raises(QueueNotFound):
        await publish(broker, "q", b"2")
    assert broker.queue_of(id) is None
    assert await broker.storage.get_message(id) is None
    assert await broker.storage.load_queues() == []


async def test_fanout_publishes_to_every_queue(broker: Broker) -> None:
    """A fan-out publish puts one message in each queue, committed together."""
    await create(broker, "a")
    await create(broker, "b")
    results = await broker.publish_fanout(["a", "b", "a"], msg(b'"all"'))
    assert [r.queue for r in results] == ["a", "b"]
    assert len({r.message_id for r in results}) == 2
    assert (broker.info("a").pending, broker.info("b").pending) == (1, 1)
    for result in results:
        row = await broker.storage.get_message(result.message_id)
        assert row is not None
        assert row.queue == result.queue


async def test_fanout_is_all_or_nothing(broker: Broker) -> None:
    """When one queue is full, a fan-out publish enqueues nowhere."""
    await create(broker, "a")
    await create(broker, "b", max_length=1)
    await publish(broker, "b", b"1")
    with pytest.raises(QueueFull):
        await broker.publish_fanout(["a", "b"], msg())
    assert (broker.info("a").pending, broker.info("b").pending) == (0, 1)


async def test_fanout_to_drop_head_queue_refuses_oversized_body(broker: Broker) -> None:
    """A body too large for one queue's max_bytes is refused before any queue gets it."""
    await create(broker, "a")
    await create(broker, "b", max_bytes=4, overflow=Overflow.DROP_HEAD)
    with pytest.raises(QueueFull):
        await broker.publish_fanout(["a", "b"], msg(b'"too long"'))
    assert broker.info("a").pending == 0


# -- browse and events ----------------------------------------------------------------------------


async def test_browse_and_get_message(broker: Broker) -> None:
    """browse pages a queue's messages with live lease data; get_message reads one."""
    await create(broker)
    ids = await publish(broker, "q", b"1", b"2", b"3")
    await broker.pull("q", 1, 0, None)
    page = await broker.browse("q", None, 2, None)
    assert [(v.message_id, v.status) for v in page.messages] == [
        (ids[0], "processing"),
        (ids[1], "pending"),
    ]
    assert page.messages[0].lease_expires_at is not None
    assert page.next_cursor == ids[1]
    rest = await broker.browse("q", MessageStatus.PENDING, 2, page.next_cursor)
    assert [v.message_id for v in rest.messages] == [ids[2]]
    assert rest.next_cursor is None
    view = await broker.get_message("q", ids[2])
    assert bytes(view.content) == b"3"
    with pytest.raises(MessageNotFound):
        await broker.get_message("q", 999)


async def test_listeners_see_queue_events(broker: Broker) -> None:
    """Listeners receive an event for each step of a message's life."""
    events: list[QueueEvent] = []
    broker.add_listener(events.append)
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    await broker.pull("q", 1, 0, None)
    await broker.ack([id])
    broker.remove_listener(events.append)
    await publish(broker, "q", b"2")
    assert [(e.type, e.message_id) for e in events] == [
        ("queue_created", None),
        ("published", id),
        ("delivered", id),
        ("acked", id),
    ]


async def test_listeners_see_requeues_failures_dead_letters_and_drops(broker: Broker) -> None:
    """nacked, failed, dead_lettered and dropped events name the message and why."""
    await create(broker, "dlq")
    await create(broker, "q")
    await create(broker, "d", dead_letter_queue="dlq")
    await create(broker, "t", message_ttl_ms=1)
    events: list[QueueEvent] = []
    broker.add_listener(events.append)
    [a] = await publish(broker, "q", b"1")
    [b] = await publish(broker, "d", b"2")
    await broker.pull("q", 1, 0, None)
    await broker.nack([a])
    await broker.pull("q", 1, 0, None)
    await broker.nack([a], requeue=False, reason="bad")
    await broker.pull("d", 1, 0, None)
    await broker.nack([b], requeue=False)
    [c] = await publish(broker, "t", b"3")
    await asyncio.sleep(20 * MS)
    assert await broker.pull("t", 1, 0, None) == []
    seen = [(e.type, e.queue, e.message_id, e.detail) for e in events if e.type != "delivered"]
    assert seen == [
        ("published", "q", a, None),
        ("published", "d", b, None),
        ("nacked", "q", a, None),
        ("failed", "q", a, "bad"),
        ("dead_lettered", "d", b, "rejected -> dlq"),
        ("published", "t", c, None),
        ("dropped", "t", c, None),
    ]


async def test_totals_sum_the_queues(broker: Broker) -> None:
    """totals adds up every queue's counters."""
    await create(broker, "a")
    await create(broker, "b")
    await publish(broker, "a", b"1", b"2")
    [id] = await publish(broker, "b", b"3")
    await broker.pull("b", 1, 0, None)
    await broker.ack([id])
    assert broker.totals() == {
        "pending": 2,
        "processing": 0,
        "processed": 1,
        "failed": 0,
        "total": 3,
    }
    assert [info.name for info in broker.infos()] == ["a", "b"]


# -- restarts -------------------------------------------------------------------------------------


async def test_restart_keeps_queues_messages_and_counts(broker: Broker) -> None:
    """After a clean restart, queues, options, pending messages and counts are all back."""
    await create(broker, "dlq")
    await create(broker, "q", max_attempts=5, dead_letter_queue="dlq")
    ids = await publish(broker, "q", b"1", b"2", b"3", b"4", b"5")
    await broker.pull("q", 3, 0, None)
    await broker.ack(ids[:1])
    await broker.nack(ids[1:2], requeue=False)
    await broker.nack(ids[2:3], requeue=True)
    await barrier(broker, "dlq")
    again = await restart(broker)
    try:
        assert again.clean_start is True
        assert again.queue_names() == ["dlq", "q"]
        info = again.info("q")
        assert (info.max_attempts, info.dead_letter_queue) == (5, "dlq")
        assert (info.pending, info.processing, info.processed, info.failed) == (3, 0, 1, 0)
        assert again.info("dlq").pending == 1
        views = await again.pull("q", 5, 0, None)
        assert [(v.message_id, v.redelivered) for v in views] == [
            (ids[2], True),
            (ids[3], False),
            (ids[4], False),
        ]
        [new] = await publish(again, "q", b"6")
        assert new > ids[-1]
    finally:
        await again.close()


async def test_restart_requeues_processing_messages_redelivered(broker: Broker) -> None:
    """A message leased at shutdown comes back pending, redelivered, next attempt."""
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    await broker.pull("q", 1, 0, None)
    again = await restart(broker)
    try:
        [view] = await again.pull("q", 1, 0, None)
        assert (view.message_id, view.attempt, view.redelivered) == (id, 2, True)
    finally:
        await again.close()


async def test_restart_keeps_delayed_messages_delayed(broker: Broker) -> None:
    """A delayed message stays invisible after a restart until its time."""
    await create(broker)
    [id] = await publish(broker, "q", b"1", delay_ms=round(300 * MS * 1000))
    again = await restart(broker)
    try:
        assert again.info("q").delayed == 1
        assert await again.pull("q", 1, 0, None) == []
        async with asyncio.timeout(2000 * MS):
            [view] = await again.pull("q", 1, 2000 * MS, None)
        assert view.message_id == id
    finally:
        await again.close()


async def test_unclean_restart_marks_pending_redelivered(broker: Broker, db_path: Path) -> None:
    """After a crash, messages that may have been delivered come back marked redelivered."""
    await create(broker)
    ids = await publish(broker, "q", b"1", b"2")
    await broker.storage.flush()
    await crash(broker)
    again = Broker(SQLiteStorage(db_path))
    await again.start()
    try:
        assert again.clean_start is False
        views = await again.pull("q", 2, 0, None)
        assert [(v.message_id, v.attempt, v.redelivered) for v in views] == [
            (ids[0], 1, True),
            (ids[1], 1, True),
        ]
    finally:
        await again.close()


async def test_unclean_restart_after_unjournaled_delivery_marks_redelivered(
    db_path: Path,
) -> None:
    """A delivery whose record was still in the write-behind buffer isn't silently repeated."""
    storage = SQLiteStorage(db_path)
    broker = Broker(storage)
    await broker.start()
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    storage.writer.linger_s = 60.0  # from now on, batches wait in the buffer
    await broker.pull("q", 1, 0, None)
    assert committed_ids(db_path) == [id]
    await crash(broker)
    again = Broker(SQLiteStorage(db_path))
    await again.start()
    try:
        [view] = await again.pull("q", 1, 0, None)
        assert (view.message_id, view.redelivered) == (id, True)
    finally:
        await again.close()


async def test_backlog_larger_than_the_body_budget_is_delivered_in_order(db_path: Path) -> None:
    """After a restart, a backlog far past body_cache_bytes is delivered whole and in order."""
    broker = Broker(SQLiteStorage(db_path), body_cache_bytes=64)
    await broker.start()
    await create(broker)
    bodies = [b'"body-%04d"' % i for i in range(600)]
    for start in range(0, len(bodies), 100):
        await publish(broker, "q", *bodies[start : start + 100])
    again = await restart(broker, body_cache_bytes=64)
    try:
        assert again.info("q").pending == 600
        sink = Sink()
        consumer = await again.subscribe("q", 50, sink)
        acked = 0
        while acked < len(bodies):
            await sink.wait_for(acked + 1)
            batch = sink.ids[acked:]
            await again.consumer_ack("q", consumer, batch)
            acked += len(batch)
        assert [e.content for e in sink.entries] == bodies
        assert all(not e.redelivered for e in sink.entries)
        assert again.budget.used == 0
    finally:
        await again.close()


# -- edges ---------------------------------------------------------------------------------------


async def test_unsubscribe_from_a_missing_queue_requeues_nothing(broker: Broker) -> None:
    """Unsubscribing after the queue went away is harmless."""
    await create(broker)
    consumer = await broker.subscribe("q", 1, Sink())
    await broker.delete_queue("q")
    assert await broker.unsubscribe("q", consumer) == 0
    assert await broker.unsubscribe("never", 1) == 0


async def test_consumers_of_an_unknown_queue_are_none(broker: Broker) -> None:
    """Asking for the consumers of a queue that doesn't exist lists nothing."""
    await create(broker)
    await broker.subscribe("q", 1, Sink())
    assert broker.consumers(["never"]) == []
    assert [c.queue for c in broker.consumers()] == ["q"]


async def test_every_queue_has_its_actor(broker: Broker) -> None:
    """``actors`` lists one actor per queue; ``find_actor`` finds it by name, or None."""
    await create(broker, "a")
    await create(broker, "b")
    assert sorted(actor.name for actor in broker.actors()) == ["a", "b"]
    assert broker.find_actor("a") is broker.actor("a")
    assert broker.find_actor("never") is None


async def test_a_stored_queue_change_is_applied_once(broker: Broker) -> None:
    """Storage showing a queue changed asks for its options once; the same sight again, not."""
    await create(broker)
    options = broker.actor("q").state.options
    assert broker.note_update("q", 1e12, options) is True
    assert broker.note_update("q", 1e12, options) is False


async def test_retry_of_a_processed_message_is_invalid(broker: Broker) -> None:
    """An acked message can't be retried."""
    await create(broker)
    [id] = await publish(broker, "q", b"1")
    await broker.pull("q", 1, 0, None)
    await broker.ack([id])
    with pytest.raises(InvalidTransition):
        await broker.retry("q", id)


async def test_retry_to_a_deleted_origin_stays_in_the_dead_letter_queue(broker: Broker) -> None:
    """A dead letter whose origin queue is gone is retried in place."""
    await create(broker, "dlq")
    await create(broker, "q", dead_letter_queue="dlq")
    [id] = await publish(broker, "q", b"1")
    await broker.pull("q", 1, 0, None)
    await broker.nack([id], requeue=False)
    await barrier(broker, "dlq")
    await broker.update_queue("q", UpdateQueueRequest(dead_letter_queue=None))
    await broker.delete_queue("q")
    view = await broker.retry("dlq", id)
    assert (view.queue, view.dead_lettered_from) == ("dlq", None)
    assert broker.info("dlq").pending == 1
    assert await broker.storage.retryable_ids("dlq", 10) == []


async def test_publish_is_refused_while_storage_is_degraded(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While commits fail, new publishes are refused up front with Unavailable."""
    await create(broker)
    assert isinstance(broker.storage, SQLiteStorage)
    monkeypatch.setattr(broker.storage.writer, "degraded", "disk full")
    with pytest.raises(Unavailable):
        await publish(broker, "q", b"1")
    with pytest.raises(Unavailable):
        await broker.publish_fanout(["q"], msg())
    assert broker.info("q").pending == 0


async def test_delete_queue_tells_its_consumers(broker: Broker) -> None:
    """Deleting a queue calls each registered consumer's on_close."""
    await broker.create_queue(CreateQueueRequest(name="gone"))
    closed: list[str] = []
    await broker.subscribe("gone", 1, lambda queue, entries: None, lambda: closed.append("x"))
    await broker.delete_queue("gone")
    assert closed == ["x"]


async def test_prune_forgets_old_failed_messages(broker: Broker) -> None:
    """Failed messages past the failed retention are deleted and leave the failed count."""
    await create(broker)
    ids = await publish(broker, "q", b"1", b"2")
    leased = await broker.pull("q", 2, 0, None)
    await broker.nack([m.message_id for m in leased], requeue=False)
    assert broker.info("q").failed == 2
    assert await broker.prune(time.time() + 10, failed_retention_s=5) == 2
    await broker.actor("q").call(lambda state, now: None)
    assert broker.info("q").failed == 0
    for id in ids:
        with pytest.raises(MessageNotFound):
            await broker.get_message("q", id)


async def test_prune_keeps_recent_failed_messages(broker: Broker) -> None:
    """Failed messages within the retention stay for retry."""
    await create(broker)
    await publish(broker, "q", b"1")
    [leased] = await broker.pull("q", 1, 0, None)
    await broker.nack([leased.message_id], requeue=False)
    assert await broker.prune(time.time(), failed_retention_s=3600) == 0
    assert broker.info("q").failed == 1

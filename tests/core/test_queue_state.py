"""Tests of `QueueState`, driven synchronously: no loop, no sleeps, time passed as ``now``."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from broker_core.claims import SharedQueueState
from broker_core.errors import InvalidTransition, MessageNotFound, QueueFull
from broker_core.journal import (
    AckOp,
    DeliverOp,
    Fail,
    Insert,
    Restore,
)
from broker_core.messages import Entry, PublishRequest, QueueOptions
from broker_core.pending import BodyBudget, pack_cold, unpack_cold
from broker_core.queue import QueueState
from broker_core.types import Overflow
from tests.core.helpers import describe

BODY = b'"body"'  # 6 bytes


class Ids:
    """Allocates increasing message ids, as the broker does."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self) -> int:
        self.last += 1
        return self.last


def req(content: bytes = BODY, **fields: Any) -> PublishRequest:
    return PublishRequest(content=msgspec.Raw(content), **fields)


def new_state(budget: int = 1 << 20, name: str = "q", **options: Any) -> QueueState:
    return QueueState(name, QueueOptions(**options), budget=BodyBudget(budget), dedup_window_s=60.0)


def publish(
    state: QueueState, ids: Ids, count: int = 1, now: float = 0.0, **fields: Any
) -> list[int]:
    """Publish ``count`` messages with ``fields``; return their ids."""
    published = state.publish([req(**fields) for _ in range(count)], now, ids)
    return [p.id for p in published]


def ops(state: QueueState) -> list[tuple[Any, ...]]:
    return [describe(op) for op in state.take_ops()]


def deliveries(state: QueueState) -> list[tuple[int, int]]:
    """Drain deliveries as ``(consumer id, message id)`` pairs."""
    return [(consumer, entry.id) for consumer, entry in state.take_deliveries()]


def assert_no_effects(state: QueueState) -> None:
    assert state.take_ops() == []
    assert state.take_deliveries() == []
    assert state.take_dead_letters() == []
    assert state.take_loads() == []


def pending_ids(state: QueueState) -> list[int]:
    """Ids waiting in ``pending``, in delivery order (highest priority first)."""
    return state.pending.ids()


def assert_consistent(state: QueueState) -> None:
    """The counters match what the state holds."""
    counted = state.pending.recount()
    assert state.pending_count == counted.ready == len(state.pending.ids())
    assert state.delayed_count == counted.delayed == len(state.pending.delayed_ids())
    assert state.pending_bytes == counted.bytes
    held = set().union(*(c.held for c in state.consumers.values()))
    assert held <= set(state.processing)
    for consumer in state.consumers.values():
        assert 0 <= len(consumer.held) <= consumer.prefetch
    assert state.budget.used == counted.hot_bytes


def stored_copy(entry: Entry) -> Entry:
    """What storage would give back for ``entry``: a fresh object with the body."""
    return Entry(
        entry.id,
        content=entry.content,
        size=entry.size,
        created_at=entry.created_at,
        priority=entry.priority,
        headers=entry.headers,
        attempt=entry.attempt,
        redelivered=entry.redelivered,
        expires_at=entry.expires_at,
    )


@pytest.fixture
def ids() -> Ids:
    return Ids()


# -- publish and push delivery --------------------------------------------------------


def test_publish_records_inserts_and_counts(ids: Ids) -> None:
    """A publish enqueues each message and emits one Insert per message."""
    state = new_state()
    published = state.publish([req(), req(b"[1,2]")], 5.0, ids)
    assert [(p.id, p.created_at, p.duplicate) for p in published] == [
        (1, 5.0, False),
        (2, 5.0, False),
    ]
    assert ops(state) == [("insert", 1), ("insert", 2)]
    assert (state.pending_count, state.pending_bytes, state.published_total) == (2, 11, 2)
    assert_consistent(state)


def test_dispatch_without_consumers_delivers_nothing(ids: Ids) -> None:
    """Messages wait in pending while no consumer is registered."""
    state = new_state()
    publish(state, ids, 2)
    state.take_ops()
    state.dispatch(0.0)
    assert_no_effects(state)
    assert state.pending_count == 2


def test_dispatch_respects_prefetch(ids: Ids) -> None:
    """A consumer never holds more unacked deliveries than its prefetch."""
    state = new_state()
    state.add_consumer(1, prefetch=2)
    publish(state, ids, 5)
    state.dispatch(0.0)
    assert deliveries(state) == [(1, 1), (1, 2)]
    state.dispatch(0.0)
    assert deliveries(state) == []
    assert state.consumers[1].credit == 0
    assert (state.pending_count, len(state.processing)) == (3, 2)
    assert_consistent(state)


def test_dispatch_emits_deliver_with_attempt_one(ids: Ids) -> None:
    """A first delivery is attempt 1, not redelivered, with a lease from the options."""
    state = new_state(lease=10.0)
    state.add_consumer(1, prefetch=1)
    publish(state, ids)
    state.take_ops()
    state.dispatch(3.0)
    [(_, entry)] = state.take_deliveries()
    assert (entry.attempt, entry.redelivered, entry.consumer) == (1, False, 1)
    assert entry.lease_deadline == 13.0
    assert state.take_ops() == [DeliverOp(1, 1, 13.0, 1)]
    assert state.delivered_total == 1


def test_round_robin_between_consumers(ids: Ids) -> None:
    """Consumers with credit take turns."""
    state = new_state()
    state.add_consumer(1, prefetch=10)
    state.add_consumer(2, prefetch=10)
    publish(state, ids, 4)
    state.dispatch(0.0)
    assert deliveries(state) == [(1, 1), (2, 2), (1, 3), (2, 4)]


def test_round_robin_skips_consumer_without_credit(ids: Ids) -> None:
    """A consumer at its prefetch leaves the others to take the rest."""
    state = new_state()
    state.add_consumer(1, prefetch=1)
    state.add_consumer(2, prefetch=10)
    publish(state, ids, 4)
    state.dispatch(0.0)
    assert deliveries(state) == [(1, 1), (2, 2), (2, 3), (2, 4)]


def test_ack_frees_credit(ids: Ids) -> None:
    """Acking a held message lets the consumer receive the next one."""
    state = new_state()
    state.add_consumer(1, prefetch=1)
    publish(state, ids, 2)
    state.dispatch(0.0)
    assert deliveries(state) == [(1, 1)]
    state.take_ops()
    outcome = state.ack([1], 1.0, consumer_id=1)
    assert outcome.settled == [1]
    assert outcome.errors == {}
    state.dispatch(1.0)
    assert deliveries(state) == [(1, 2)]
    assert ops(state) == [("ack", 1), ("deliver", 2, 1)]
    assert (state.processed, state.acked_total) == (1, 1)
    assert_consistent(state)


def test_ack_op_carries_queue_and_time(ids: Ids) -> None:
    """The AckOp operation names the queue and when it happened."""
    state = new_state(name="orders")
    publish(state, ids)
    state.pull(1, None, 0.0)
    state.take_ops()
    state.ack([1], 7.5)
    assert state.take_ops() == [AckOp("orders", 1, 7.5)]


# -- nack, attempts and dead letters ---------------------------------------------------


def test_nack_requeue_redelivers_at_head_with_next_attempt(ids: Ids) -> None:
    """A requeued message goes back to the head and comes back as attempt 2, redelivered."""
    state = new_state()
    publish(state, ids, 3)
    [first] = state.pull(1, None, 0.0)
    state.take_ops()
    state.nack([first.id], 1.0, requeue=True)
    assert ops(state) == [("requeue", 1, 1)]
    assert pending_ids(state) == [1, 2, 3]
    [again] = state.pull(1, None, 2.0)
    assert (again.id, again.attempt, again.redelivered) == (1, 2, True)
    assert state.nacked_total == 1
    assert_consistent(state)


def test_nack_without_requeue_fails_the_message(ids: Ids) -> None:
    """Without requeue and without a dead-letter queue, the message is failed."""
    state = new_state()
    publish(state, ids)
    state.pull(1, None, 0.0)
    state.take_ops()
    outcome = state.nack([1], 1.0, requeue=False, reason="bad input")
    assert outcome.settled == [1]
    assert state.take_ops() == [Fail("q", 1, "bad input", 1.0)]
    assert state.failed == 1
    assert state.take_dead_letters() == []
    assert (state.pending_count, len(state.processing)) == (0, 0)


def test_nack_without_requeue_or_reason_says_rejected(ids: Ids) -> None:
    """A nack without a reason fails the message as ``rejected``."""
    state = new_state()
    publish(state, ids)
    state.pull(1, None, 0.0)
    state.take_ops()
    state.nack([1], 1.0, requeue=False)
    assert ops(state) == [("fail", 1, "rejected")]


def test_nack_reason_never_turns_a_failure_into_a_drop(ids: Ids) -> None:
    """A client's reason text (even ``expired``) fails the message; it is never deleted."""
    state = new_state()
    publish(state, ids, 2)
    state.pull(2, None, 0.0)
    state.take_ops()
    state.nack([1], 1.0, requeue=False, reason="expired")
    state.nack([2], 1.0, requeue=False, reason="maxlen")
    assert ops(state) == [("fail", 1, "expired"), ("fail", 2, "maxlen")]
    assert state.failed == 2


def test_nack_without_requeue_dead_letters_with_dlq(ids: Ids) -> None:
    """With a dead-letter queue, a rejected message moves there with its attempt reset."""
    state = new_state(dead_letter_queue="dlq")
    publish(state, ids)
    state.pull(1, None, 0.0)
    state.take_ops()
    state.nack([1], 1.0, requeue=False, reason="boom")
    assert ops(state) == [("dead_letter", 1, "dlq", "boom")]
    [(target, item)] = state.take_dead_letters()
    assert target == "dlq"
    assert isinstance(item, Entry)
    assert (item.id, item.attempt, item.redelivered) == (1, 0, False)
    assert (item.dead_lettered_from, item.last_error) == ("q", "boom")
    assert state.failed == 0


def test_dead_letter_queue_naming_itself_fails_instead(ids: Ids) -> None:
    """A queue that is its own dead-letter queue fails rejected messages."""
    state = new_state(dead_letter_queue="q")
    publish(state, ids)
    state.pull(1, None, 0.0)
    state.take_ops()
    state.nack([1], 1.0, requeue=False)
    assert ops(state) == [("fail", 1, "rejected")]
    assert state.take_dead_letters() == []


def test_max_attempts_dead_letters_after_n_deliveries(ids: Ids) -> None:
    """The nack of the max_attempts-th delivery fails the message even with requeue."""
    state = new_state(max_attempts=2)
    publish(state, ids)
    state.pull(1, None, 0.0)
    state.nack([1], 1.0, requeue=True)
    [entry] = state.pull(1, None, 2.0)
    assert entry.attempt == 2
    state.take_ops()
    state.nack([1], 3.0, requeue=True)
    assert ops(state) == [("fail", 1, "max_attempts")]
    assert state.failed == 1
    assert state.pending_count == 0


def test_max_attempts_routes_to_dlq(ids: Ids) -> None:
    """Exhausted attempts dead-letter the message when a dead-letter queue is set."""
    state = new_state(max_attempts=1, dead_letter_queue="dlq")
    publish(state, ids)
    state.pull(1, None, 0.0)
    state.take_ops()
    state.nack([1], 1.0)
    assert ops(state) == [("dead_letter", 1, "dlq", "max_attempts")]


def test_nack_by_foreign_consumer_is_an_error(ids: Ids) -> None:
    """A consumer can't nack what another consumer holds."""
    state = new_state()
    state.add_consumer(1, prefetch=1)
    state.add_consumer(2, prefetch=1)
    publish(state, ids)
    state.dispatch(0.0)
    outcome = state.nack([1], 1.0, consumer_id=2)
    assert outcome.settled == []
    assert isinstance(outcome.errors[1], MessageNotFound)
    assert 1 in state.processing


# -- leases -----------------------------------------------------------------------------


def test_lease_expiry_requeues_via_tick(ids: Ids) -> None:
    """A lease that runs out puts the message back, redelivered."""
    state = new_state()
    publish(state, ids)
    state.pull(1, 5.0, 0.0)
    state.take_ops()
    assert state.next_deadline() == 5.0
    state.tick(4.9)
    assert state.take_ops() == []
    assert 1 in state.processing
    state.tick(5.0)
    assert ops(state) == [("requeue", 1, 1)]
    assert (state.pending_count, len(state.processing)) == (1, 0)
    [again] = state.pull(1, None, 6.0)
    assert (again.attempt, again.redelivered) == (2, True)


def test_lease_expiry_frees_consumer_credit(ids: Ids) -> None:
    """An expired lease counts as returned: the consumer gets the message again."""
    state = new_state(lease=2.0)
    state.add_consumer(1, prefetch=1)
    publish(state, ids)
    state.dispatch(0.0)
    deliveries(state)
    state.tick(2.0)
    state.dispatch(2.0)
    [(consumer, entry)] = state.take_deliveries()
    assert (consumer, entry.id, entry.attempt) == (1, 1, 2)
    assert_consistent(state)


def test_lease_expiry_counts_toward_max_attempts(ids: Ids) -> None:
    """Expired leases use up attempts like nacks do."""
    state = new_state(max_attempts=1)
    publish(state, ids)
    state.pull(1, 1.0, 0.0)
    state.take_ops()
    state.tick(1.0)
    assert ops(state) == [("fail", 1, "max_attempts")]


def test_touch_extends_a_lease(ids: Ids) -> None:
    """A touched lease runs from the touch, and the old deadline no longer expires it."""
    state = new_state()
    publish(state, ids)
    state.pull(1, 5.0, 0.0)
    assert state.touch(1, 10.0, 4.0) == 14.0
    assert state.processing[1].lease_deadline == 14.0
    state.take_ops()
    state.tick(5.0)
    assert state.take_ops() == []
    assert 1 in state.processing
    state.tick(14.0)
    assert ops(state) == [("requeue", 1, 1)]


def test_touch_of_a_pending_message_is_invalid(ids: Ids) -> None:
    """Only a leased message can be touched."""
    state = new_state()
    publish(state, ids)
    with pytest.raises(InvalidTransition):
        state.touch(1, 5.0, 0.0)


def test_touch_by_foreign_consumer_is_an_error(ids: Ids) -> None:
    """A consumer can't extend another consumer's lease."""
    state = new_state()
    state.add_consumer(1, prefetch=1)
    publish(state, ids)
    state.dispatch(0.0)
    with pytest.raises(MessageNotFound):
        state.touch(1, 5.0, 0.0, consumer_id=2)


def test_ack_after_lease_expiry_is_invalid(ids: Ids) -> None:
    """Once a lease expired, the late ack is refused (the message is pending again)."""
    state = new_state()
    publish(state, ids)
    state.pull(1, 1.0, 0.0)
    state.tick(1.0)
    outcome = state.ack([1], 2.0)
    assert isinstance(outcome.errors[1], InvalidTransition)
    assert state.pending_count == 1


# -- consumers ----------------------------------------------------------------------------


def test_remove_consumer_requeues_held_messages_redelivered(ids: Ids) -> None:
    """A consumer that goes away gives back what it held, in order, at the head."""
    state = new_state()
    state.add_consumer(1, prefetch=3)
    publish(state, ids, 4)
    state.dispatch(0.0)
    deliveries(state)
    state.take_ops()
    assert state.remove_consumer(1, 1.0) == 3
    assert sorted(ops(state)) == [("requeue", 1, 1), ("requeue", 2, 1), ("requeue", 3, 1)]
    assert pending_ids(state) == [1, 2, 3, 4]
    assert state.consumers == {}
    assert state.processing == {}
    entries = state.pull(4, None, 2.0)
    assert [(e.id, e.redelivered) for e in entries] == [
        (1, True),
        (2, True),
        (3, True),
        (4, False),
    ]


def test_remove_consumer_hands_messages_to_the_others(ids: Ids) -> None:
    """What a removed consumer held goes to the remaining consumers."""
    state = new_state()
    state.add_consumer(1, prefetch=1)
    publish(state, ids)
    state.dispatch(0.0)
    deliveries(state)
    state.add_consumer(2, prefetch=1)
    state.remove_consumer(1, 1.0)
    state.dispatch(1.0)
    assert deliveries(state) == [(2, 1)]


def test_remove_unknown_consumer_is_a_no_op() -> None:
    """Removing a consumer twice requeues nothing the second time."""
    state = new_state()
    assert state.remove_consumer(42, 0.0) == 0


def test_removed_consumer_gets_no_more_deliveries(ids: Ids) -> None:
    """A consumer removed while it had credit is no longer served."""
    state = new_state()
    state.add_consumer(1, prefetch=5)
    state.remove_consumer(1, 0.0)
    publish(state, ids)
    state.dispatch(0.0)
    assert deliveries(state) == []


# -- pull ---------------------------------------------------------------------------------


def test_pull_leases_up_to_max_count(ids: Ids) -> None:
    """A pull leases the first ready messages to no consumer, with its own lease."""
    state = new_state(lease=30.0)
    publish(state, ids, 3)
    state.take_ops()
    entries = state.pull(2, 4.0, 1.0)
    assert [(e.id, e.consumer, e.lease_deadline) for e in entries] == [
        (1, None, 5.0),
        (2, None, 5.0),
    ]
    assert ops(state) == [("deliver", 1, 1), ("deliver", 2, 1)]
    assert (state.pending_count, len(state.processing)) == (1, 2)
    assert state.pull(5, None, 1.0)[0].lease_deadline == 31.0
    assert state.pull(5, None, 1.0) == []


def test_ack_by_any_holder_for_pulled_messages(ids: Ids) -> None:
    """An ack without a consumer id settles a message whoever holds it."""
    state = new_state()
    state.add_consumer(1, prefetch=1)
    publish(state, ids)
    state.dispatch(0.0)
    assert state.ack([1], 1.0).settled == [1]
    assert state.consumers[1].credit == 1


# -- ordering ------------------------------------------------------------------------------


def test_priority_higher_first_fifo_within(ids: Ids) -> None:
    """Higher priorities are delivered first; one priority keeps publish order."""
    state = new_state()
    for priority in (0, 5, 0, 9, 5):
        state.publish([req(priority=priority)], 0.0, ids)
    entries = state.pull(10, None, 0.0)
    assert [(e.priority, e.id) for e in entries] == [(9, 4), (5, 2), (5, 5), (0, 1), (0, 3)]


def test_requeue_returns_to_head_of_its_priority(ids: Ids) -> None:
    """A requeued low-priority message still waits behind higher priorities."""
    state = new_state()
    state.publish([req(priority=1)], 0.0, ids)
    state.pull(1, None, 0.0)
    state.publish([req(priority=7), req(priority=1)], 0.0, ids)
    state.nack([1], 0.0)
    assert pending_ids(state) == [2, 1, 3]


# -- delays and expiry -------------------------------------------------------------------


def test_delay_keeps_a_message_invisible_until_tick(ids: Ids) -> None:
    """delay_ms holds a message back until a tick passes its time."""
    state = new_state()
    state.add_consumer(1, prefetch=5)
    publish(state, ids, now=10.0, delay_ms=1500)
    assert (state.pending_count, state.delayed_count, state.pending_bytes) == (0, 1, 6)
    assert state.next_deadline() == 11.5
    state.dispatch(10.0)
    state.tick(11.4)
    state.dispatch(11.4)
    assert deliveries(state) == []
    state.tick(11.5)
    assert (state.pending_count, state.delayed_count) == (1, 0)
    state.dispatch(11.5)
    assert deliveries(state) == [(1, 1)]
    assert_consistent(state)


def test_deliver_at_keeps_a_message_invisible_until_tick(ids: Ids) -> None:
    """deliver_at (an instant) works like a delay."""
    state = new_state()
    at = datetime.fromtimestamp(1000.0, UTC)
    publish(state, ids, now=900.0, deliver_at=at)
    assert state.pull(1, None, 999.0) == []
    state.tick(1000.0)
    [entry] = state.pull(1, None, 1000.0)
    assert entry.deliver_at == 0.0


def test_deliver_at_in_the_past_is_ready_at_once(ids: Ids) -> None:
    """A deliver_at already passed makes the message ready immediately."""
    state = new_state()
    publish(state, ids, now=900.0, deliver_at=datetime.fromtimestamp(10.0, UTC))
    assert (state.pending_count, state.delayed_count) == (1, 0)


def test_delayed_messages_keep_fifo_among_equal_times(ids: Ids) -> None:
    """Messages delayed to the same instant become ready in publish order."""
    state = new_state()
    publish(state, ids, 3, now=0.0, delay_ms=1000)
    state.tick(1.0)
    assert [e.id for e in state.pull(3, None, 1.0)] == [1, 2, 3]


def test_ttl_expired_message_is_dropped_by_tick(ids: Ids) -> None:
    """A message not delivered within ttl_ms is dropped at its deadline."""
    state = new_state()
    publish(state, ids, now=0.0, ttl_ms=1000)
    state.take_ops()
    assert state.next_deadline() == 1.0
    state.tick(0.999)
    assert state.take_ops() == []
    state.tick(1.0)
    assert ops(state) == [("drop", 1)]
    assert (state.pending_count, state.pending_bytes) == (0, 0)
    assert state.budget.used == 0


def test_ttl_expired_message_is_never_delivered(ids: Ids) -> None:
    """Even without a tick, delivery skips an expired message."""
    state = new_state()
    publish(state, ids, now=0.0, ttl_ms=1000)
    publish(state, ids, now=0.0)
    state.take_ops()
    [entry] = state.pull(5, None, 2.0)
    assert entry.id == 2
    assert ops(state) == [("drop", 1), ("deliver", 2, 1)]


def test_message_ttl_dead_letters_with_reason_expired(ids: Ids) -> None:
    """The queue's message_ttl_ms sends expired messages to its dead-letter queue."""
    state = new_state(message_ttl_ms=500, dead_letter_queue="dlq")
    publish(state, ids, now=0.0)
    state.take_ops()
    state.tick(0.5)
    assert ops(state) == [("dead_letter", 1, "dlq", "expired")]
    [(target, item)] = state.take_dead_letters()
    assert target == "dlq"
    assert isinstance(item, Entry)
    assert item.last_error == "expired"


def test_dead_lettered_expired_message_does_not_expire_again(ids: Ids) -> None:
    """A message that expired into a dead-letter queue stays there (its TTL is spent)."""
    source = new_state(message_ttl_ms=500, dead_letter_queue="dlq")
    dlq = new_state(name="dlq")
    publish(source, ids, now=0.0)
    source.tick(0.5)
    [(_, item)] = source.take_dead_letters()
    dlq.adopt(item, 0.6)
    dlq.tick(10.0)
    assert dlq.take_ops() == []
    [entry] = dlq.pull(1, None, 10.0)
    assert entry.id == 1


def test_ttl_is_the_shorter_of_message_and_queue(ids: Ids) -> None:
    """ttl_ms and message_ttl_ms combine as the minimum."""
    state = new_state(message_ttl_ms=5000)
    publish(state, ids, now=0.0, ttl_ms=1000)
    publish(state, ids, now=0.0, ttl_ms=9000)
    publish(state, ids, now=0.0)
    expiries = [e.expires_at for e in state.pull(3, None, 0.0)]
    assert expiries == [1.0, 5.0, 5.0]


def test_ttl_of_a_delayed_message_runs_from_its_delivery_time(ids: Ids) -> None:
    """A delayed message's TTL starts when it becomes visible."""
    state = new_state()
    publish(state, ids, now=0.0, delay_ms=2000, ttl_ms=1000)
    state.tick(2.0)
    state.tick(2.5)
    [entry] = state.pull(1, None, 2.5)
    assert entry.expires_at == 3.0


# -- limits ----------------------------------------------------------------------------------


def test_max_length_reject_publish_is_atomic(ids: Ids) -> None:
    """A batch that would pass max_length is refused whole; nothing is enqueued."""
    state = new_state(max_length=3)
    publish(state, ids, 2)
    state.take_ops()
    with pytest.raises(QueueFull) as caught:
        publish(state, ids, 2)
    assert caught.value.queue == "q"
    assert "max_length" in str(caught.value)
    assert_no_effects(state)
    assert (state.pending_count, state.published_total, ids.last) == (2, 2, 2)
    publish(state, ids, 1)
    assert state.pending_count == 3


def test_max_length_counts_delayed_messages(ids: Ids) -> None:
    """Delayed messages count toward max_length."""
    state = new_state(max_length=1)
    publish(state, ids, delay_ms=1000)
    with pytest.raises(QueueFull):
        publish(state, ids)


def test_max_length_ignores_processing_messages(ids: Ids) -> None:
    """A leased message no longer counts toward max_length."""
    state = new_state(max_length=1)
    publish(state, ids)
    state.pull(1, None, 0.0)
    publish(state, ids)
    assert state.pending_count == 1


def test_max_bytes_reject_publish(ids: Ids) -> None:
    """A publish that would pass max_bytes is refused."""
    state = new_state(max_bytes=10)
    publish(state, ids)
    with pytest.raises(QueueFull) as caught:
        publish(state, ids)
    assert "max_bytes" in str(caught.value)
    assert (state.pending_count, state.pending_bytes) == (1, 6)


def test_check_room_matches_publish(ids: Ids) -> None:
    """check_room raises exactly when a reject_publish publish would."""
    state = new_state(max_length=2, max_bytes=100)
    publish(state, ids)
    state.check_room(1, 6)
    with pytest.raises(QueueFull):
        state.check_room(2, 6)
    with pytest.raises(QueueFull):
        state.check_room(1, 95)


def test_check_room_refuses_a_body_larger_than_max_bytes_with_drop_head() -> None:
    """With drop_head, a single body larger than max_bytes can never fit."""
    state = new_state(max_bytes=10, overflow=Overflow.DROP_HEAD)
    state.check_room(1, 10)
    with pytest.raises(QueueFull):
        state.check_room(1, 11)


def test_drop_head_drops_the_oldest(ids: Ids) -> None:
    """With drop_head, the oldest pending message makes room for the new one."""
    state = new_state(max_length=2, overflow=Overflow.DROP_HEAD)
    publish(state, ids, 2)
    state.take_ops()
    publish(state, ids, 1)
    assert ops(state) == [("drop", 1), ("insert", 3)]
    assert pending_ids(state) == [2, 3]
    assert_consistent(state)


def test_drop_head_by_bytes_drops_as_many_as_needed(ids: Ids) -> None:
    """drop_head on max_bytes drops oldest messages until the new body fits."""
    state = new_state(max_bytes=14, overflow=Overflow.DROP_HEAD)
    publish(state, ids, 2)
    state.take_ops()
    state.publish([req(b'"a-long-body"')], 0.0, ids)
    assert ops(state) == [("drop", 1), ("drop", 2), ("insert", 3)]
    assert state.pending_bytes == 13
    assert_consistent(state)


def test_drop_head_dead_letters_the_oldest_with_dlq(ids: Ids) -> None:
    """With a dead-letter queue, drop_head moves the oldest there with reason maxlen."""
    state = new_state(max_length=1, overflow=Overflow.DROP_HEAD, dead_letter_queue="dlq")
    publish(state, ids)
    state.take_ops()
    publish(state, ids)
    assert ops(state) == [("dead_letter", 1, "dlq", "maxlen"), ("insert", 2)]
    assert [
        (target, item.id if isinstance(item, Entry) else item)
        for target, item in state.take_dead_letters()
    ] == [("dlq", 1)]


def test_drop_head_refuses_a_batch_longer_than_max_length(ids: Ids) -> None:
    """A batch that alone passes max_length can't fit by dropping; it's refused."""
    state = new_state(max_length=2, overflow=Overflow.DROP_HEAD)
    publish(state, ids)
    state.take_ops()
    with pytest.raises(QueueFull):
        publish(state, ids, 3)
    assert_no_effects(state)
    assert state.pending_count == 1


# -- deduplication ------------------------------------------------------------------------------


def test_dedup_returns_the_original_id_and_enqueues_once(ids: Ids) -> None:
    """A repeated dedup_id within the window answers the first message's id."""
    state = new_state()
    [first] = state.publish([req(dedup_id="a")], 1.0, ids)
    [again] = state.publish([req(dedup_id="a")], 2.0, ids)
    assert (first.id, first.duplicate) == (1, False)
    assert (again.id, again.created_at, again.duplicate) == (1, 1.0, True)
    assert ops(state) == [("insert", 1)]
    assert (state.pending_count, state.published_total, ids.last) == (1, 1, 1)


def test_dedup_within_one_batch(ids: Ids) -> None:
    """Two requests with one dedup_id in a batch make one message."""
    state = new_state()
    results = state.publish([req(dedup_id="a"), req(), req(dedup_id="a")], 0.0, ids)
    assert [(r.id, r.duplicate) for r in results] == [(1, False), (2, False), (1, True)]
    assert state.pending_count == 2


def test_dedup_duplicates_do_not_count_against_max_length(ids: Ids) -> None:
    """A duplicate takes no room in a full queue."""
    state = new_state(max_length=1)
    publish(state, ids, dedup_id="a")
    [again] = state.publish([req(dedup_id="a")], 0.0, ids)
    assert again.duplicate


def test_dedup_id_is_forgotten_after_the_window(ids: Ids) -> None:
    """After dedup_window_s, the same dedup_id makes a new message."""
    state = new_state()
    publish(state, ids, now=0.0, dedup_id="a")
    assert state.next_deadline() == 60.0
    [late] = state.publish([req(dedup_id="a")], 60.0, ids)
    assert (late.id, late.duplicate) == (2, False)
    assert state.pending_count == 2


def test_dedup_is_remembered_after_the_message_is_acked(ids: Ids) -> None:
    """The window holds even when the first message is gone."""
    state = new_state()
    publish(state, ids, dedup_id="a")
    state.pull(1, None, 0.0)
    state.ack([1], 0.0)
    [again] = state.publish([req(dedup_id="a")], 1.0, ids)
    assert (again.id, again.duplicate) == (1, True)


# -- cold items, loads and hydration -----------------------------------------------------


def test_cold_items_pack_id_priority_and_size() -> None:
    """pack_cold and unpack_cold round-trip."""
    assert unpack_cold(pack_cold(123456789, 9, 262144)) == (123456789, 9, 262144)


def test_publishes_past_the_budget_become_cold(ids: Ids) -> None:
    """Once the body budget is spent, messages keep only id, priority and size."""
    state = new_state(budget=12)
    publish(state, ids, 3)
    hot = {entry.id for entry in state.pending.entries()}
    assert [id for id in pending_ids(state) if id not in hot] == [3]
    assert state.budget.used == 12
    assert (state.pending_count, state.pending_bytes) == (3, 18)
    assert_consistent(state)


def test_dispatch_stops_at_a_cold_head_and_asks_for_loads(ids: Ids) -> None:
    """Delivery pauses at a cold message and asks storage for a batch of bodies."""
    state = new_state(budget=6)
    state.add_consumer(1, prefetch=10)
    publish(state, ids, 4)
    state.dispatch(0.0)
    assert deliveries(state) == [(1, 1)]
    assert state.take_loads() == [2, 3, 4]
    state.dispatch(0.0)
    assert state.take_loads() == []  # one load at a time
    assert state.pull(1, None, 0.0) == []


def test_hydrate_makes_cold_items_deliverable_in_order(ids: Ids) -> None:
    """Loaded bodies replace the cold items and deliver in the original order."""
    state = new_state(budget=6)
    state.add_consumer(1, prefetch=10)
    publish(state, ids, 4)
    inserts = [op.entry for op in state.take_ops() if isinstance(op, Insert)]
    stored = {entry.id: stored_copy(entry) for entry in inserts}
    state.dispatch(0.0)
    deliveries(state)
    wanted = state.take_loads()
    state.hydrate([stored[i] for i in reversed(wanted)], wanted)
    state.dispatch(0.0)
    assert deliveries(state) == [(1, 2), (1, 3), (1, 4)]
    assert state.budget.used == 0
    assert_consistent(state)


def test_hydrate_with_a_missing_id_drops_it_from_counts(ids: Ids) -> None:
    """A cold message that storage no longer has is forgotten."""
    state = new_state(budget=0)
    publish(state, ids, 3)
    stored = {
        op.entry.id: stored_copy(op.entry) for op in state.take_ops() if isinstance(op, Insert)
    }
    state.pull(1, None, 0.0)
    wanted = state.take_loads()
    assert wanted == [1, 2, 3]
    state.hydrate([stored[1], stored[3]], wanted)
    assert (state.pending_count, state.pending_bytes) == (2, 12)
    assert [e.id for e in state.pull(5, None, 0.0)] == [1, 3]
    assert_consistent(state)


def test_hydrate_failed_allows_another_load(ids: Ids) -> None:
    """After a failed load, the next dispatch asks again."""
    state = new_state(budget=0)
    publish(state, ids, 2)
    state.pull(1, None, 0.0)
    assert state.take_loads() == [1, 2]
    state.hydrate_failed()
    state.pull(1, None, 0.0)
    assert state.take_loads() == [1, 2]


def test_hydrate_keeps_requeued_messages_ahead(ids: Ids) -> None:
    """A message requeued while a load was in flight stays at the head."""
    state = new_state(budget=6)
    publish(state, ids, 3)
    stored = {
        op.entry.id: stored_copy(op.entry) for op in state.take_ops() if isinstance(op, Insert)
    }
    [first] = state.pull(5, None, 0.0)
    wanted = state.take_loads()
    state.nack([first.id], 0.0)
    state.hydrate([stored[i] for i in wanted], wanted)
    assert [e.id for e in state.pull(5, None, 0.0)] == [1, 2, 3]


def test_restore_rebuilds_groups_from_packed_items() -> None:
    """restore() takes grouped items packed as the pending order keeps them, names beside."""
    state = new_state()
    grouped = [pack_cold(id, 0, 10) for id in (1, 2, 3, 4)]
    state.restore([pack_cold(5, 0, 1)], [], grouped=grouped, group_names=["a", "b", "a", "b"])
    assert (state.pending_count, state.pending_bytes) == (5, 41)
    assert state.pending.group_count == 2
    assert [state.pending.item_at("a", i) for i in (0, 1)] == [1, 3]
    assert state.take_ops() == []
    assert_consistent(state)


def test_restore_rebuilds_cold_pending_and_delayed() -> None:
    """restore() puts replayed messages back without journal operations."""
    state = new_state()
    delayed = Entry(9, content=None, size=4, created_at=0.0, deliver_at=50.0)
    state.restore([pack_cold(1, 0, 5), pack_cold(2, 3, 7)], [delayed])
    assert (state.pending_count, state.delayed_count, state.pending_bytes) == (2, 1, 16)
    assert pending_ids(state) == [2, 1]
    assert state.take_ops() == []
    state.pull(1, None, 0.0)
    assert state.take_loads() == [2]
    state.tick(50.0)
    assert state.pending_count == 3
    assert_consistent(state)


def test_adopt_takes_a_cold_item(ids: Ids) -> None:
    """A cold item handed over by another queue joins pending."""
    state = new_state()
    state.adopt(pack_cold(7, 2, 10), 0.0)
    assert (state.pending_count, state.pending_bytes) == (1, 10)
    assert pending_ids(state) == [7]


def test_take_for_retry_takes_a_pending_message_out(ids: Ids) -> None:
    """A dead-lettered pending message taken for retry leaves; a second take is refused."""
    state = new_state()
    publish(state, ids, 3)
    state.take_ops()
    state.take_for_retry(2, False, "origin")
    assert state.take_ops() == [Restore(2, "origin")]
    assert pending_ids(state) == [1, 3]
    with pytest.raises(InvalidTransition):
        state.take_for_retry(2, False, "origin")
    assert_consistent(state)


def test_take_for_retry_of_a_failed_message_uncounts_it(ids: Ids) -> None:
    """A failed message taken for retry no longer counts as failed here."""
    state = new_state()
    publish(state, ids)
    state.pull(1, None, 0.0)
    state.nack([1], 0.0, requeue=False)
    state.take_ops()
    state.take_for_retry(1, True, "q")
    assert state.failed == 0
    assert state.take_ops() == [Restore(1, "q")]


# -- purge ---------------------------------------------------------------------------------


def test_purge_clears_pending_and_delayed_but_not_processing(ids: Ids) -> None:
    """Purge deletes waiting messages; leased ones stay leased."""
    state = new_state(budget=12)
    publish(state, ids, 2)
    state.pull(1, None, 0.0)
    publish(state, ids, 3)  # one hot, two cold
    publish(state, ids, delay_ms=5000)
    state.take_ops()
    assert state.purge() == 5
    assert ops(state) == [("purge",)]
    assert (state.pending_count, state.delayed_count, state.pending_bytes) == (0, 0, 0)
    assert list(state.processing) == [1]
    assert state.budget.used == 0
    assert state.ack([1], 1.0).settled == [1]
    state.tick(10.0)
    assert state.pull(5, None, 10.0) == []


def test_purge_cancels_pending_expiries(ids: Ids) -> None:
    """Purged messages with a TTL never expire later."""
    state = new_state()
    publish(state, ids, ttl_ms=1000)
    state.purge()
    state.take_ops()
    state.tick(5.0)
    assert state.take_ops() == []


# -- settlement errors -------------------------------------------------------------------


def test_ack_by_foreign_consumer_is_an_error(ids: Ids) -> None:
    """A consumer can't ack what another consumer holds; the lease stays."""
    state = new_state()
    state.add_consumer(1, prefetch=1)
    state.add_consumer(2, prefetch=1)
    publish(state, ids)
    state.dispatch(0.0)
    state.take_ops()
    outcome = state.ack([1], 1.0, consumer_id=2)
    assert outcome.settled == []
    assert isinstance(outcome.errors[1], MessageNotFound)
    assert state.take_ops() == []
    assert state.processing[1].consumer == 1


def test_ack_of_a_pending_message_is_invalid(ids: Ids) -> None:
    """Acking a message that isn't leased is an InvalidTransition."""
    state = new_state()
    publish(state, ids)
    outcome = state.ack([1, 99], 0.0)
    assert set(outcome.errors) == {1, 99}
    assert all(isinstance(e, InvalidTransition) for e in outcome.errors.values())
    assert state.pending_count == 1


def test_ack_twice_is_invalid_the_second_time(ids: Ids) -> None:
    """A message is acked once."""
    state = new_state()
    publish(state, ids)
    state.pull(1, None, 0.0)
    assert state.ack([1], 0.0).settled == [1]
    assert isinstance(state.ack([1], 0.0).errors[1], InvalidTransition)
    assert state.processed == 1


def test_settle_batch_reports_each_id(ids: Ids) -> None:
    """A batch ack settles the leased ids and reports the others."""
    state = new_state()
    publish(state, ids, 2)
    state.pull(1, None, 0.0)
    outcome = state.ack([1, 2], 0.0)
    assert outcome.settled == [1]
    assert list(outcome.errors) == [2]


# -- accounting -----------------------------------------------------------------------------


def test_counters_stay_consistent_through_a_busy_scenario(ids: Ids) -> None:
    """Counters match contents after a mix of every transition."""
    state = new_state(budget=30, max_attempts=3, dead_letter_queue="dlq")
    state.add_consumer(1, prefetch=2)
    state.add_consumer(2, prefetch=3)
    publish(state, ids, 8)
    publish(state, ids, 2, priority=4, ttl_ms=500)
    publish(state, ids, 2, delay_ms=2000)
    state.dispatch(0.0)
    assert_consistent(state)
    held = [entry.id for _, entry in state.take_deliveries()]
    state.ack(held[:2], 0.1)
    state.nack(held[2:3], 0.1)
    state.nack(held[3:4], 0.1, requeue=False)
    assert_consistent(state)
    state.tick(1.0)
    state.dispatch(1.0)
    assert_consistent(state)
    state.tick(40.0)
    state.dispatch(40.0)
    assert_consistent(state)
    state.remove_consumer(2, 41.0)
    assert_consistent(state)
    state.purge()
    assert_consistent(state)
    assert state.published_total == 12
    assert state.acked_total == 2
    assert state.nacked_total == 2


def test_budget_returns_to_zero_when_everything_is_acked(ids: Ids) -> None:
    """Every byte taken from the budget is given back once messages leave."""
    state = new_state(budget=20)
    publish(state, ids, 5)
    publish(state, ids, 2, delay_ms=1000)
    stored = {
        op.entry.id: stored_copy(op.entry) for op in state.take_ops() if isinstance(op, Insert)
    }
    now = 0.0
    while state.pending_count or state.delayed_count or state.processing:
        now += 0.5
        state.tick(now)
        entries = state.pull(2, None, now)
        wanted = state.take_loads()
        if wanted:
            state.hydrate([stored[i] for i in wanted if i in stored], wanted)
        for entry in entries:
            if entry.attempt == 1 and entry.id % 2:
                state.nack([entry.id], now)
            else:
                state.ack([entry.id], now)
        assert now < 100, "the queue drains"
    assert state.budget.used == 0


def test_budget_returns_to_zero_after_purge(ids: Ids) -> None:
    """Purge gives back the bytes of the messages it deletes."""
    state = new_state(budget=20)
    publish(state, ids, 5)
    publish(state, ids, delay_ms=1000)
    state.purge()
    assert state.budget.used == 0


def test_set_options_governs_the_next_delivery(ids: Ids) -> None:
    """New options take effect from the next lease."""
    state = new_state(lease=30.0)
    publish(state, ids, 2)
    state.set_options(QueueOptions(lease=2.0))
    [entry] = state.pull(1, None, 0.0)
    assert entry.lease_deadline == 2.0


# -- edges -----------------------------------------------------------------------------------------


def test_an_empty_queue_has_nothing_to_deliver() -> None:
    """An empty queue has nothing ready, nothing to pull and no deadline."""
    state = new_state()
    assert state.pending_count == 0
    assert state.pull(1, None, 0.0) == []
    assert state.take_loads() == []
    assert state.next_deadline() is None


def test_pull_of_only_expired_messages_returns_nothing(ids: Ids) -> None:
    """When every ready message has expired, a pull gets none and they are dropped."""
    state = new_state()
    publish(state, ids, 2, ttl_ms=100)
    state.take_ops()
    assert state.pull(5, None, 1.0) == []
    assert ops(state) == [("drop", 1), ("drop", 2)]
    assert state.pending_count == 0


def test_drop_head_refuses_a_body_larger_than_max_bytes(ids: Ids) -> None:
    """No amount of dropping makes room for a body larger than max_bytes."""
    state = new_state(max_bytes=8, overflow=Overflow.DROP_HEAD)
    publish(state, ids)
    state.take_ops()
    with pytest.raises(QueueFull):
        state.publish([req(b'"0123456789"')], 0.0, ids)
    assert_no_effects(state)
    assert state.pending_count == 1


def test_check_room_refuses_a_batch_longer_than_max_length_with_drop_head() -> None:
    """With drop_head, more messages than max_length can never fit."""
    state = new_state(max_length=2, overflow=Overflow.DROP_HEAD)
    state.check_room(2, 6)
    with pytest.raises(QueueFull):
        state.check_room(3, 6)


def test_drop_head_drops_delayed_messages_when_nothing_is_ready(ids: Ids) -> None:
    """With only delayed messages waiting, drop_head drops the earliest delayed one."""
    state = new_state(max_length=1, overflow=Overflow.DROP_HEAD)
    publish(state, ids, delay_ms=5000)
    state.take_ops()
    publish(state, ids)
    assert ops(state) == [("drop", 1), ("insert", 2)]
    assert (state.pending_count, state.delayed_count) == (1, 0)
    assert_consistent(state)


def test_drop_head_dead_letters_cold_items_as_they_are(ids: Ids) -> None:
    """A cold message pushed out by drop_head goes to the dead-letter queue still cold."""
    state = new_state(budget=0, max_length=1, overflow=Overflow.DROP_HEAD, dead_letter_queue="dlq")
    publish(state, ids)
    state.take_ops()
    publish(state, ids)
    [(target, item)] = state.take_dead_letters()
    assert (target, item) == ("dlq", pack_cold(1, 0, 6))
    assert ops(state) == [("dead_letter", 1, "dlq", "maxlen"), ("insert", 2)]


def test_adopt_keeps_a_future_deliver_at_delayed(ids: Ids) -> None:
    """An adopted message that isn't due yet waits in the delay heap."""
    state = new_state()
    entry = Entry(5, content=b"1", size=1, created_at=0.0, deliver_at=10.0)
    entry.lease_deadline = 3.0
    state.adopt(entry, 1.0)
    assert (state.pending_count, state.delayed_count, entry.lease_deadline) == (0, 1, 0.0)
    state.tick(10.0)
    assert [e.id for e in state.pull(1, None, 10.0)] == [5]


def test_purge_of_replayed_delayed_messages(ids: Ids) -> None:
    """Purge also clears delayed messages whose bodies were never loaded."""
    state = new_state()
    state.restore([], [Entry(1, content=None, size=4, created_at=0.0, deliver_at=50.0)])
    assert state.purge() == 1
    assert (state.delayed_count, state.pending_bytes, state.budget.used) == (0, 0, 0)


def test_hydrated_message_still_expires_by_tick(ids: Ids) -> None:
    """A replayed delayed message with a TTL expires on time after its body is loaded."""
    state = new_state()
    replayed = Entry(1, content=None, size=1, created_at=0.0, deliver_at=10.0, expires_at=20.0)
    state.restore([], [replayed])
    state.tick(10.0)
    state.pull(1, None, 10.0)
    assert state.take_loads() == [1]
    stored = Entry(1, content=b"1", size=1, created_at=0.0, deliver_at=10.0, expires_at=20.0)
    state.hydrate([stored], [1])
    state.tick(20.0)
    assert ops(state) == [("drop", 1)]
    assert state.pending_count == 0
    assert state.budget.used == 0


def test_remove_consumer_counts_attempts(ids: Ids) -> None:
    """A message whose consumers keep vanishing is failed after max_attempts deliveries."""
    state = new_state(max_attempts=2)
    [message_id] = publish(state, ids)
    for consumer_id in (1, 2):
        state.add_consumer(consumer_id, 1)
        state.dispatch(0.0)
        state.take_deliveries()
        state.remove_consumer(consumer_id, 0.0)
    ops = [describe(op) for op in state.take_ops()]
    assert ops[-1] == ("fail", message_id, "max_attempts")
    assert state.failed == 1


# -- memory --------------------------------------------------------------------------


def test_pending_entries_are_not_tracked_by_the_collector(ids: Ids) -> None:
    """A backlog adds nothing for the garbage collector to walk: entries are untracked."""
    state = new_state()
    publish(state, ids, 1000, headers={"trace": "abc"})
    entries = list(state.pending.entries())
    assert len(entries) == 1000
    assert not any(gc.is_tracked(entry) for entry in entries)


def test_entries_are_equal_only_to_themselves() -> None:
    """Two entries with the same fields are two messages: identity equality, hashable."""
    first = Entry(1, content=BODY, size=len(BODY), created_at=0.0)
    second = Entry(1, content=BODY, size=len(BODY), created_at=0.0)
    assert first == first
    assert first != second
    assert len({first, second}) == 2


# -- withdrawn publishes ------------------------------------------------------------------------


def inserted(state: QueueState) -> list[Entry]:
    """The entries of the `Insert` ops drained from ``state`` (what a failed batch held)."""
    return [op.entry for op in state.take_ops() if isinstance(op, Insert)]


def test_withdraw_takes_out_pending_and_delayed_messages(ids: Ids) -> None:
    """A withdrawn publish leaves pending and the delay heap; the others stay in order."""
    state = new_state()
    publish(state, ids, 3)
    publish(state, ids, 1, delay_ms=60_000)
    entries = inserted(state)
    assert sorted(state.withdraw("q", [entries[1], entries[3]])) == [2, 4]
    assert pending_ids(state) == [1, 3]
    assert state.delayed_count == 0
    assert_consistent(state)
    assert_no_effects(state)


def test_withdraw_takes_back_a_lease_and_refuses_its_ack(ids: Ids) -> None:
    """A withdrawn message already pushed is no longer held: its ack fails, the credit returns."""
    state = new_state()
    state.add_consumer(7, 1)
    publish(state, ids, 2)
    state.dispatch(0.0)
    assert deliveries(state) == [(7, 1)]
    [first, _] = inserted(state)
    assert state.withdraw("q", [first]) == [1]
    state.dispatch(0.0)
    assert deliveries(state) == [(7, 2)]
    outcome = state.ack([1], 0.0, consumer_id=7)
    assert isinstance(outcome.errors[1], InvalidTransition)
    assert_consistent(state)


def test_withdraw_forgets_the_dedup_id_of_a_withdrawn_publish(ids: Ids) -> None:
    """A retry with the dedup_id of a withdrawn publish is a new message, not a duplicate."""
    state = new_state()
    [first] = state.publish([req(dedup_id="a")], 1.0, ids)
    state.withdraw("q", inserted(state))
    [again] = state.publish([req(dedup_id="a")], 2.0, ids)
    assert (again.id, again.duplicate) == (first.id + 1, False)


def test_withdraw_in_another_queue_touches_only_what_it_holds(ids: Ids) -> None:
    """A queue told of another's withdrawn publishes keeps its own messages and dedup ids."""
    source, other = new_state(), new_state(name="other")
    publish(source, ids, 1)
    other.publish([req(dedup_id="a")], 1.0, ids)
    other.take_ops()
    assert other.withdraw("q", inserted(source)) == []
    assert pending_ids(other) == [2]
    assert other.publish([req(dedup_id="a")], 2.0, ids)[0].duplicate


def test_withdraw_in_shared_mode_uncounts_what_storage_will_never_hold(ids: Ids) -> None:
    """Shared mode: a withdrawn publish no longer counts as pending in storage."""
    state = SharedQueueState("q", QueueOptions(), budget=BodyBudget(1 << 20))
    publish(state, ids, 2)
    [first, second] = inserted(state)
    state.withdraw("q", [first])
    assert (state.stored_pending, state.stored_bytes) == (1, second.size)

"""Tests of `QueueState` in shared mode: the database owns pending order, the state claims."""

from __future__ import annotations

from typing import Any

import pytest

from broker_core.claims import SharedQueueState
from broker_core.errors import QueueFull
from broker_core.journal import Insert, Trim
from broker_core.messages import Entry, QueueOptions
from broker_core.pending import BodyBudget
from tests.core.test_queue_state import BODY, Ids, deliveries, ops, publish, req


def shared_state(**options: Any) -> SharedQueueState:
    return SharedQueueState(
        "q", QueueOptions(**options), budget=BodyBudget(1 << 20), dedup_window_s=60.0
    )


def stored(*ids: int, priority: int = 0, attempt: int = 0) -> list[Entry]:
    """Entries as a claim returns them from storage."""
    return [
        Entry(id, content=BODY, size=len(BODY), created_at=0.0, priority=priority, attempt=attempt)
        for id in ids
    ]


def test_a_publish_is_only_written_never_kept() -> None:
    """The message goes to storage for any node to claim; it counts toward limits until read."""
    state = shared_state()
    [id] = publish(state, Ids())
    assert ops(state) == [("insert", id)]
    assert (state.pending_count, state.stored_pending, state.stored_bytes) == (0, 1, len(BODY))
    state.add_consumer(1, prefetch=5)
    state.dispatch(0.0)
    assert deliveries(state) == []


def test_consumers_credit_asks_for_one_claim_at_a_time() -> None:
    """A claim of the free credit is asked for once; its answer is dispatched."""
    state = shared_state()
    state.add_consumer(1, prefetch=3)
    state.balance(0)
    assert state.take_claims() == 3
    state.balance(0)
    assert state.take_claims() == 0, "one claim on its way at a time"
    state.claimed(stored(10, 11), 3)
    state.dispatch(0.0)
    assert deliveries(state) == [(1, 10), (1, 11)]
    assert ops(state) == [("deliver", 10, 1), ("deliver", 11, 1)]


def test_a_short_claim_waits_for_a_wake() -> None:
    """After a claim that found fewer than asked, the next waits until storage tells of more."""
    state = shared_state()
    state.add_consumer(1, prefetch=2)
    state.balance(0)
    state.claimed([], state.take_claims())
    state.balance(0)
    assert state.take_claims() == 0
    state.wake(0.0, now=1.0)
    state.balance(0)
    assert state.take_claims() == 2


def test_a_wake_during_a_claim_is_not_lost() -> None:
    """Told of new messages while a claim was on its way: the short answer doesn't end the want."""
    state = shared_state()
    state.add_consumer(1, prefetch=2)
    state.balance(0)
    count = state.take_claims()
    state.wake(0.0, now=1.0)
    state.claimed([], count)
    state.balance(0)
    assert state.take_claims() == 2


def test_a_wake_in_the_future_arms_the_timer() -> None:
    """A delayed message's time is a deadline; at it, claims resume."""
    state = shared_state()
    state.add_consumer(1, prefetch=1)
    state.balance(0)
    state.claimed([], state.take_claims())
    state.wake(50.0, now=10.0)
    assert state.next_deadline() == 50.0
    state.tick(49.0)
    state.balance(0)
    assert state.take_claims() == 0
    state.tick(50.0)
    state.balance(0)
    assert state.take_claims() == 1


def test_waiting_pulls_count_in_the_demand() -> None:
    """A parked REST pull asks for its count, served from what the claim brings."""
    state = shared_state()
    state.balance(4)
    assert state.take_claims() == 4
    state.claimed(stored(1, 2), 4)
    assert [e.id for e in state.pull(4, None, 0.0)] == [1, 2]


def test_a_nack_goes_back_to_storage_not_to_this_node() -> None:
    """Requeued and dead-lettered messages are ops only: any node claims them next."""
    state = shared_state(max_attempts=2, dead_letter_queue="dlq")
    state.add_consumer(1, prefetch=2)
    state.balance(0)
    state.claimed(stored(7) + stored(8, attempt=1), state.take_claims())
    state.dispatch(0.0)
    deliveries(state)
    ops(state)
    state.nack([7, 8], 1.0, consumer_id=1)
    assert ops(state) == [("requeue", 7, 1), ("dead_letter", 8, "dlq", "max_attempts")]
    assert state.take_dead_letters() == []
    assert state.pending_count == 0


def test_claimed_messages_no_consumer_can_take_are_released() -> None:
    """A consumer gone before its claim came back: the messages return to storage as they were."""
    state = shared_state()
    state.add_consumer(1, prefetch=2)
    state.balance(0)
    count = state.take_claims()
    state.remove_consumer(1, 0.0)
    state.claimed(stored(3, 4), count)
    state.dispatch(0.0)
    state.balance(0)
    assert ops(state) == [("release", 3), ("release", 4)]
    assert state.pending_count == 0


def test_max_length_counts_what_storage_holds() -> None:
    """reject_publish refuses once storage's pending count (as last read) is at the limit."""
    state = shared_state(max_length=3)
    state.counted(2, 0, state.count_mark())
    publish(state, Ids())
    with pytest.raises(QueueFull):
        publish(state, Ids())


def test_a_dedup_id_another_node_published_is_a_repeat_here() -> None:
    """Told of another node's dedup_id, a publish of it here answers that node's message."""
    state = shared_state()
    state.remember_dedup("order-7", 41, created_at=100.0, now=100.5)
    [repeat] = state.publish([req(dedup_id="order-7")], 101.0, Ids())
    assert (repeat.id, repeat.created_at, repeat.duplicate) == (41, 100.0, True)
    assert ops(state) == []
    state.remember_dedup("old", 42, created_at=0.0, now=100.0)  # its window is over
    [fresh] = state.publish([req(dedup_id="old")], 101.0, Ids())
    assert fresh.duplicate is False


def test_drop_head_asks_storage_to_drop_the_oldest() -> None:
    """Past max_length, drop_head writes a Trim for storage (the oldest aren't in memory here)."""
    state = shared_state(max_length=3, overflow="drop_head", dead_letter_queue="dlq")
    state.counted(3, 3 * len(BODY), state.count_mark())
    publish(state, Ids(), count=2)
    [trim, *inserts] = state.take_ops()
    assert isinstance(trim, Trim)
    assert (trim.count, trim.size, trim.target) == (2, 0, "dlq")
    assert len(inserts) == 2
    assert state.stored_pending == 3


def claim_nothing(state: SharedQueueState) -> None:
    """A first claim that finds storage empty: nothing ready waits there."""
    state.balance(0)
    state.claimed([], state.take_claims())


def test_a_publish_beside_a_consumer_with_credit_is_claimed_as_it_is_written() -> None:
    """Storage holding nothing ready, a consumer here with spare credit takes the message from
    memory: its Insert carries this node's claim, no claim is asked, and it is not counted as
    stored. Beyond the spare credit, messages go to storage for any node."""
    state = shared_state(lease=30.0)
    state.add_consumer(1, prefetch=2)
    claim_nothing(state)
    ids = publish(state, Ids(), count=3, now=5.0)
    inserts = [op for op in state.take_ops() if type(op) is Insert]
    assert [(op.entry.id, op.claimed) for op in inserts] == [
        (ids[0], 35.0),
        (ids[1], 35.0),
        (ids[2], 0.0),
    ]
    assert (state.pending_count, state.stored_pending) == (2, 1)
    state.dispatch(5.0)
    assert deliveries(state) == [(1, ids[0]), (1, ids[1])]
    state.balance(0)
    assert state.take_claims() == 0, "no credit left: nothing to claim"


@pytest.mark.parametrize(
    ("case", "fields", "options"),
    [
        ("storage may hold ready messages", {}, {}),
        ("grouped", {"group": "g"}, {}),
        ("delayed", {"delay_ms": 1000}, {}),
        ("single active consumer", {}, {"single_active_consumer": True}),
    ],
)
def test_a_publish_takes_the_shared_path_when_order_or_rules_need_the_claim(
    case: str, fields: dict[str, Any], options: dict[str, Any]
) -> None:
    """Behind ready messages storage may hold, in a group, delayed, or for a single active
    consumer, the claim statement alone keeps the rules: the message is written pending."""
    state = shared_state(**options)
    state.add_consumer(1, prefetch=5)
    if case != "storage may hold ready messages":
        claim_nothing(state)
    publish(state, Ids(), **fields)
    [insert] = [op for op in state.take_ops() if type(op) is Insert]
    assert insert.claimed == 0.0
    assert (state.pending_count, state.stored_pending) == (0, 1)


def test_a_withdrawn_publish_claimed_here_leaves_the_stored_count_alone() -> None:
    """A failed batch takes its publishes back: those claimed here leave this node's
    order, the others the stored count."""
    state = shared_state()
    state.add_consumer(1, prefetch=1)
    claim_nothing(state)
    publish(state, Ids(), count=2)
    entries = [op.entry for op in state.take_ops() if type(op) is Insert]
    assert (state.pending_count, state.stored_pending) == (1, 1)
    assert sorted(state.withdraw("q", entries)) == [entries[0].id]
    assert (state.pending_count, state.stored_pending) == (0, 0)


def test_the_fallback_poll_claims_without_sending_publishes_to_storage() -> None:
    """The poll's wake (nobody told of messages) asks for a claim, and publishes meanwhile
    are still claimed here; a told wake sends them behind what storage holds until a
    claim comes back short."""
    state = shared_state()
    state.add_consumer(1, prefetch=10)
    claim_nothing(state)
    state.wake(0.0, now=1.0, told=False)
    state.balance(0)
    asked = state.take_claims()
    assert asked == 10
    ids = Ids()
    publish(state, ids)
    assert [op.claimed > 0 for op in state.take_ops() if type(op) is Insert] == [True]
    state.claimed([], asked)
    state.wake(0.0, now=1.0)
    publish(state, ids)
    assert [op.claimed > 0 for op in state.take_ops() if type(op) is Insert] == [False]
    state.balance(0)
    state.claimed([], state.take_claims())
    publish(state, ids)
    assert [op.claimed > 0 for op in state.take_ops() if type(op) is Insert] == [True]

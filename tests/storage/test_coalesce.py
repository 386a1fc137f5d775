"""`storage.coalesce`: a batch of journal operations becomes the steps a backend writes.

Pure: no database. Each message is written once per segment, in its final
state; queue-level operations are barriers that keep their place; a failed
batch's publishes are withdrawn and never written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from broker_core.journal import (
    AckOp,
    DeadLetter,
    DeleteQueue,
    DeliverOp,
    Drop,
    Fail,
    Insert,
    PurgeQueue,
    PutQueue,
    Release,
    Requeue,
    Reschedule,
    Restore,
    Trim,
)
from broker_core.messages import Entry, QueueOptions
from storage.coalesce import Plan, Segment, coalesce, leave_out, withdraw_publishes
from storage.rows import FAILED, INSERT_COLUMNS, PENDING, PROCESSED, PROCESSING

if TYPE_CHECKING:
    from broker_core.journal import Op

PUT = PutQueue(name="jobs", options=QueueOptions(), created_at=1.0, updated_at=1.0)


def insert(id: int, queue: str = "jobs") -> Insert:
    """The publish of message ``id`` to ``queue``."""
    return Insert(queue=queue, entry=Entry(id, content=b"body", size=4, created_at=1.0))


def segment(plan: Plan, index: int = 0) -> Segment:
    """Step ``index`` of ``plan``, which must be a segment."""
    step = plan.steps[index]
    assert isinstance(step, Segment), f"step {index} is {step!r}"
    return step


def row(segment: Segment, id: int) -> dict[str, Any]:
    """The row ``segment`` inserts for message ``id``, by column name."""
    return dict(zip(INSERT_COLUMNS, segment.inserts[id], strict=True))


def plan_of(*ops: Op, last_id: int = 0) -> Plan:
    """The plan of one batch holding ``ops``."""
    return coalesce(ops, last_id)


# One message's operations, coalesced


def test_a_publish_is_one_pending_row() -> None:
    """A message published in the batch is inserted once, pending, in its queue."""
    plan = plan_of(insert(1))
    inserted = row(segment(plan), 1)
    assert inserted["queue"] == "jobs"
    assert inserted["status"] == PENDING
    assert inserted["content"] == b"body"
    assert segment(plan).patches == {}


def test_a_publish_delivered_and_acked_in_the_batch_is_one_processed_row() -> None:
    """Publish, deliver and ack in one batch: one inserted row, processed, and no patch."""
    plan = plan_of(
        insert(1),
        DeliverOp(id=1, attempt=1, lease_deadline=30.0),
        AckOp(queue="jobs", id=1, at=5.0),
    )
    inserted = row(segment(plan), 1)
    assert (inserted["status"], inserted["attempt"]) == (PROCESSED, 1)
    assert (inserted["settled_at"], inserted["lease_deadline"]) == (5.0, 0.0)
    assert segment(plan).patches == {}
    assert segment(plan).acked == {"jobs": 1}


def test_a_delivery_of_a_stored_message_is_a_patch() -> None:
    """A message stored earlier and delivered now gets a patch: processing, attempt, lease."""
    plan = plan_of(DeliverOp(id=7, attempt=2, lease_deadline=30.0))
    assert segment(plan).patches == {
        7: {"status": PROCESSING, "attempt": 2, "lease_deadline": 30.0}
    }
    assert segment(plan).inserts == {}


def test_a_patch_holds_the_last_value_of_each_column() -> None:
    """Delivered then requeued: one patch, pending again, redelivered, with the later attempt."""
    plan = plan_of(
        DeliverOp(id=7, attempt=1, lease_deadline=30.0),
        Requeue(id=7, attempt=1, queue="jobs"),
        DeliverOp(id=7, attempt=2, lease_deadline=60.0),
        Requeue(id=7, attempt=2, queue="jobs"),
    )
    assert segment(plan).patches == {
        7: {
            "status": PENDING,
            "attempt": 2,
            "lease_deadline": 0.0,
            "redelivered": True,
            "deliver_at": 0.0,
        }
    }


def test_a_requeue_after_backoff_and_a_reschedule_set_deliver_at() -> None:
    """A back-off's requeue stores when the message is due; a reschedule its time and priority."""
    plan = plan_of(
        Requeue(id=7, attempt=1, queue="jobs", deliver_at=99.5),
        Reschedule(id=8, queue="jobs", deliver_at=120.0, priority=4),
    )
    patches = segment(plan).patches
    assert (patches[7]["deliver_at"], patches[7]["status"]) == (99.5, PENDING)
    assert patches[8] == {"deliver_at": 120.0, "priority": 4}


def test_acks_are_counted_per_queue() -> None:
    """Each ack adds one to its queue's processed count."""
    plan = plan_of(
        AckOp(queue="jobs", id=1, at=1.0),
        AckOp(queue="jobs", id=2, at=1.0),
        AckOp(queue="mail", id=3, at=1.0),
    )
    assert segment(plan).acked == {"jobs": 2, "mail": 1}


def test_a_release_returns_a_message_to_pending_not_redelivered() -> None:
    """A claimed message released undelivered is pending again, without the redelivered mark."""
    plan = plan_of(Release(queue="jobs", id=7, attempt=0))
    assert segment(plan).patches == {7: {"status": PENDING, "attempt": 0, "lease_deadline": 0.0}}


def test_a_failure_records_its_reason_and_time() -> None:
    """A failed message is failed, settled at its time, with its reason and no lease."""
    plan = plan_of(Fail(queue="jobs", id=7, reason="max_attempts", at=9.0))
    assert segment(plan).patches == {
        7: {
            "status": FAILED,
            "settled_at": 9.0,
            "last_error": "max_attempts",
            "lease_deadline": 0.0,
        }
    }


def test_a_dead_letter_moves_the_message_to_its_target_as_new() -> None:
    """A dead-lettered message is pending in the target queue, attempt 0, its source kept."""
    plan = plan_of(DeadLetter(id=7, source="jobs", target="dlq", reason="expired"))
    patch = segment(plan).patches[7]
    assert patch["queue"] == "dlq"
    assert (patch["status"], patch["attempt"], patch["redelivered"]) == (PENDING, 0, False)
    assert (patch["dead_lettered_from"], patch["last_error"]) == ("jobs", "expired")
    assert (patch["expires_at"], patch["dedup_id"]) == (0.0, None)


def test_a_publish_dead_lettered_in_the_batch_is_inserted_in_the_target() -> None:
    """Published and dead-lettered in one batch: one row, already in the dead-letter queue."""
    plan = plan_of(insert(1), DeadLetter(id=1, source="jobs", target="dlq", reason="maxlen"))
    inserted = row(segment(plan), 1)
    assert (inserted["queue"], inserted["dead_lettered_from"]) == ("dlq", "jobs")


def test_a_restore_brings_the_message_back_to_its_queue_as_new() -> None:
    """A restored message is pending in its queue, attempt 0, with no dead-letter origin."""
    plan = plan_of(Restore(id=7, queue="jobs"))
    patch = segment(plan).patches[7]
    assert (patch["queue"], patch["status"], patch["attempt"]) == ("jobs", PENDING, 0)
    assert (patch["dead_lettered_from"], patch["settled_at"], patch["deliver_at"]) == (
        None,
        0.0,
        0.0,
    )


def test_a_message_published_and_dropped_in_the_batch_is_never_written() -> None:
    """Insert then drop in one batch: no row, no delete, no step at all."""
    plan = plan_of(insert(1), Drop(id=1))
    assert plan.steps == []


def test_a_dropped_stored_message_is_deleted_and_its_patch_forgotten() -> None:
    """A stored message delivered then dropped is one delete, with no patch before it."""
    plan = plan_of(DeliverOp(id=7, attempt=1, lease_deadline=30.0), Drop(id=7))
    assert segment(plan).patches == {}
    assert segment(plan).drops == [7]


def test_patches_are_grouped_by_the_columns_they_set() -> None:
    """Two deliveries share one shape; a failure has its own; each value row ends in its id."""
    plan = plan_of(
        DeliverOp(id=1, attempt=1, lease_deadline=30.0),
        DeliverOp(id=2, attempt=1, lease_deadline=31.0),
        Fail(queue="jobs", id=3, reason="nack", at=2.0),
    )
    assert segment(plan).shapes() == {
        ("status", "attempt", "lease_deadline"): [
            (PROCESSING, 1, 30.0, 1),
            (PROCESSING, 1, 31.0, 2),
        ],
        ("status", "settled_at", "last_error", "lease_deadline"): [(FAILED, 2.0, "nack", 0.0, 3)],
    }


def test_an_empty_batch_has_no_steps() -> None:
    """Nothing in, nothing to write; the last id stays."""
    assert plan_of(last_id=5) == Plan([], 5, False)


# Barriers


@pytest.mark.parametrize(
    "barrier",
    [PUT, PurgeQueue(name="jobs"), DeleteQueue(name="jobs"), Trim("jobs", 1, 4, None)],
    ids=["put", "purge", "delete", "trim"],
)
def test_a_queue_operation_splits_the_batch_in_order(barrier: Op) -> None:
    """Message operations before and after a queue operation land in two segments around it."""
    plan = plan_of(insert(1), barrier, insert(2))
    assert len(plan.steps) == 3
    assert list(segment(plan, 0).inserts) == [1]
    assert plan.steps[1] is barrier
    assert list(segment(plan, 2).inserts) == [2]


def test_an_operation_after_a_barrier_is_not_folded_into_the_row_before_it() -> None:
    """A publish before a purge and its ack after it: inserted pending, then patched processed."""
    plan = plan_of(insert(1), PurgeQueue(name="jobs"), AckOp(queue="jobs", id=1, at=3.0))
    assert row(segment(plan, 0), 1)["status"] == PENDING
    assert segment(plan, 2).patches[1]["status"] == PROCESSED


def test_barriers_alone_leave_no_empty_segment() -> None:
    """Queue operations with no message operations between them are the only steps."""
    delete = DeleteQueue(name="jobs")
    assert plan_of(PUT, delete).steps == [PUT, delete]


# plan.removes and plan.last_id


@pytest.mark.parametrize(
    ("ops", "removes"),
    [
        ([insert(1), AckOp(queue="jobs", id=1, at=1.0)], False),
        ([PUT], False),
        ([PurgeQueue(name="jobs")], True),
        ([DeleteQueue(name="jobs")], True),
        ([Trim("jobs", 1, 4, "dlq")], True),
        ([Drop(id=7)], True),
        ([insert(1), Drop(id=1)], True),
    ],
    ids=["settles", "put", "purge", "delete", "trim", "drop", "insert-then-drop"],
)
def test_removes_tells_whether_the_batch_can_take_rows_away(ops: list[Op], removes: bool) -> None:
    """Only deletes (drops, purges, deletes, trims, unwritten inserts) set ``removes``."""
    assert plan_of(*ops).removes is removes


def test_last_id_rises_to_the_highest_published_id() -> None:
    """The plan's last id is the highest id published in the batch."""
    assert plan_of(insert(3), insert(9), insert(5), last_id=2).last_id == 9


def test_last_id_never_falls() -> None:
    """Publishing ids below the stored last id keeps it."""
    assert plan_of(insert(3), last_id=10).last_id == 10


def test_a_dropped_id_above_the_last_id_raises_it() -> None:
    """A withdrawn publish's id was handed out: the last id covers it, so it is never reused."""
    assert plan_of(Drop(id=12), last_id=10).last_id == 12


# withdraw_publishes and leave_out


def test_withdrawing_publishes_drops_them_and_their_settlements() -> None:
    """A failed batch's inserts become drops; its other ops on those messages go; the rest stays."""
    ack_other = AckOp(queue="jobs", id=2, at=1.0)
    ops: list[Any] = [
        insert(1),
        DeliverOp(id=1, attempt=1, lease_deadline=30.0),
        ack_other,
        insert(3),
        Fail(queue="jobs", id=3, reason="nack", at=2.0),
        PUT,
    ]
    kept, ids = withdraw_publishes(ops)
    assert kept == [Drop(id=1), ack_other, Drop(id=3), PUT]
    assert ids == {1, 3}


def test_withdrawing_from_a_batch_without_publishes_changes_nothing() -> None:
    """With no insert in the batch, it is returned as it is, with no ids."""
    ops: list[Any] = [AckOp(queue="jobs", id=2, at=1.0), PUT]
    kept, ids = withdraw_publishes(ops)
    assert kept is ops
    assert ids == set()


def test_withdrawing_keeps_what_is_not_a_journal_operation() -> None:
    """Stand-ins that are not journal operations are kept in their place."""
    kept, ids = withdraw_publishes(["marker", insert(1), 42])
    assert kept == ["marker", Drop(id=1), 42]
    assert ids == {1}


def test_a_withdrawn_batch_writes_deletes_and_keeps_the_ids_taken() -> None:
    """Coalesced, a withdrawn batch deletes the publishes' ids and its last id covers them."""
    kept, _ = withdraw_publishes([insert(11), insert(12), AckOp(queue="jobs", id=2, at=1.0)])
    plan = coalesce(kept, 10)
    assert segment(plan).drops == [11, 12]
    assert segment(plan).inserts == {}
    assert segment(plan).acked == {"jobs": 1}
    assert plan.last_id == 12


def test_leave_out_removes_the_operations_on_withdrawn_messages() -> None:
    """A later batch loses every operation naming a withdrawn id, and keeps the others."""
    ack_other = AckOp(queue="jobs", id=2, at=1.0)
    ops: list[Any] = [
        DeliverOp(id=1, attempt=1, lease_deadline=30.0),
        ack_other,
        Requeue(id=1, attempt=1, queue="jobs"),
        Drop(id=1),
        PUT,
        "marker",
    ]
    assert leave_out(ops, {1}) == [ack_other, PUT, "marker"]


def test_leave_out_of_no_ids_keeps_everything() -> None:
    """With no withdrawn ids, the batch is unchanged."""
    ops: list[Any] = [DeliverOp(id=1, attempt=1, lease_deadline=30.0), PUT]
    assert leave_out(ops, set()) == ops


def test_history_lines_join_the_insert_and_the_patch_of_their_message() -> None:
    """History lines append to the row's ``history``: in the insert, else as a patch."""
    from broker_core.history import History, decode

    plan = plan_of(insert(1), History([1, 2, 2], ["0p\n", "5d1\n", "9a\n"]))
    [step] = plan.steps
    assert isinstance(step, Segment)
    assert [e.event for e in decode(row(step, 1)["history"])] == ["published"]
    assert [e.event for e in decode(step.patches[2]["history"])] == ["delivered", "acked"]


def test_an_ended_message_keeps_a_body_less_row_with_its_history() -> None:
    """Cancelled, expired or dropped (a `Drop` with a why): status 4, no body, history kept.

    A withdrawn publish (a `Drop` without a why) is still never written.
    """
    from broker_core.history import History, decode

    plan = plan_of(insert(1), Drop(1, "expired"), History([1, 1], ["0p\n", "0e\n"]))
    [step] = plan.steps
    assert isinstance(step, Segment)
    inserted = row(step, 1)
    assert (inserted["status"], inserted["content"], inserted["last_error"]) == (4, b"", "expired")
    assert [e.event for e in decode(inserted["history"])] == ["published", "expired"]
    assert not plan.removes
    [step] = plan_of(Drop(2, "cancelled", "admin"), History([2], ["9cadmin\n"])).steps
    assert isinstance(step, Segment)
    assert step.drops == []
    patch = step.patches[2]
    assert (patch["status"], patch["content"], patch["last_error"]) == (4, b"", "cancelled")
    assert patch["history"] == "9cadmin\n"
    withdrawn = plan_of(insert(3), Drop(3), History([3], ["0p\n"]))
    assert all(not isinstance(s, Segment) or 3 not in s.inserts for s in withdrawn.steps)

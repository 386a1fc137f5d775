"""Coalescing a batch of journal operations per message, before a backend renders it to SQL.

A batch becomes a `Plan`: a list of steps, each either a `Segment` (the
message operations between two queue-level operations) or one of those
queue-level operations (`PutQueue`, `PurgeQueue`, `DeleteQueue`, `Trim`), which are
barriers and keep their place in the order. Within a segment every message
is written once: a message published and settled in the same batch becomes
one inserted row in its final state; a message already stored gets one
patch holding the last value of each column its operations changed; a
message inserted and dropped in the batch is never written.

The rules live here once; `storage.sqlite` and `storage.postgres` only
render steps to their dialect (patches grouped by shape, so each shape is
one bulk statement).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple

from broker_core.history import History, SetResult
from broker_core.journal import (
    AckOp,
    DeadLetter,
    DeleteQueue,
    DeliverOp,
    Drop,
    Fail,
    FireSchedule,
    Insert,
    PurgeQueue,
    PutQueue,
    Release,
    Requeue,
    Reschedule,
    Restore,
    Trim,
)

from .rows import COLUMN_INDEX, ENDED, FAILED, PENDING, PROCESSED, PROCESSING, insert_row

_HISTORY = COLUMN_INDEX["history"]

if TYPE_CHECKING:
    from collections.abc import Iterable

    from broker_core.journal import Op
    from broker_core.messages import Entry

__all__ = ["Barrier", "Plan", "Segment", "coalesce", "leave_out", "withdraw_publishes"]

Barrier = PutQueue | PurgeQueue | DeleteQueue | Trim | FireSchedule
"""Queue-level operations: written in their place, between segments (a fire after its insert)."""


class Segment:
    """Message operations of one batch between two barriers, coalesced per message.

    Backends write, in this order: ``inserts`` (rows in `rows.ENTRY_COLUMNS`
    order), the patches of `shapes`, ``drops`` (ids to delete), then ``acked``
    (processed counts to add per queue).
    """

    __slots__ = ("acked", "drops", "inserts", "never", "patches", "results")

    def __init__(self) -> None:
        self.inserts: dict[int, list[Any]] = {}
        self.patches: dict[int, dict[str, Any]] = {}
        self.drops: list[int] = []
        self.acked: dict[str, int] = {}
        self.results: dict[int, bytes] = {}
        """Ack results by message id."""
        self.never: set[int] = set()
        """Messages dropped in this segment: nothing more of theirs is written (no insert
        if they were inserted in it, no history line or result before their delete)."""

    @property
    def empty(self) -> bool:
        """Whether there is nothing to write."""
        return not (self.inserts or self.patches or self.drops or self.acked or self.results)

    def add_history(self, id: int, line: str) -> None:
        """Append a history line (`broker_core.history_codec`) to message ``id``'s ``history``.

        It joins the message's insert or patch of this segment (no statement
        of its own): backends render a patched ``history`` as an append.
        """
        row = self.inserts.get(id)
        if row is not None:
            index = _HISTORY
            row[index] = line if row[index] is None else row[index] + line
            return
        if id in self.never:
            return
        patch = self.patches.get(id)
        if patch is None:
            self.patches[id] = {"history": line}
        else:
            patch["history"] = patch.get("history", "") + line

    def add_histories(self, ids: list[int], lines: list[str]) -> None:
        """`add_history` of each of ``lines`` to message ``ids[i]``, in order (the hot path)."""
        inserts = self.inserts
        patches = self.patches
        never = self.never
        index = _HISTORY
        for id, line in zip(ids, lines, strict=True):
            row = inserts.get(id)
            if row is not None:
                before = row[index]
                row[index] = line if before is None else before + line
                continue
            patch = patches.get(id)
            if patch is None:
                if id not in never:
                    patches[id] = {"history": line}
            else:
                before = patch.get("history")
                patch["history"] = line if before is None else before + line

    def result_rows(self) -> list[tuple[int, bytes]]:
        """The results to write (none of a message never written)."""
        return [(id, r) for id, r in self.results.items() if id not in self.never]

    def insert(self, queue: str, entry: Entry) -> None:
        """A message published to ``queue``."""
        self.inserts[entry.id] = insert_row(queue, entry)

    def patch(self, id: int, **columns: Any) -> None:
        """Set ``columns`` of message ``id`` (in its pending insert, else in its patch)."""
        row = self.inserts.get(id)
        if row is not None:
            for column, value in columns.items():
                row[COLUMN_INDEX[column]] = value
            return
        patch = self.patches.get(id)
        if patch is None:
            self.patches[id] = columns
        else:
            patch.update(columns)

    def drop(self, id: int) -> None:
        """Delete message ``id`` (or never insert it)."""
        if self.inserts.pop(id, None) is None:
            self.patches.pop(id, None)
            self.drops.append(id)
        self.never.add(id)

    def end(self, id: int, why: str, at: float) -> None:
        """Message ``id`` ended (cancelled, expired, dropped): keep a body-less row (`ENDED`).

        The row stays for the processed retention, so that its history and
        why it ended (``last_error``) stay readable; the body is released
        (``content`` emptied; on SQLite a patched ``content`` also drops the
        segment reference). Its dedup id stays: the window outlives the
        message, as for an acked one.
        """
        self.patch(id, status=ENDED, settled_at=at, lease_deadline=0.0, last_error=why, content=b"")

    def shapes(self) -> dict[tuple[str, ...], list[tuple[Any, ...]]]:
        """Patches grouped by the columns they set: ``columns -> [(*values, id), ...]``."""
        shapes: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for id, patch in self.patches.items():
            shapes.setdefault(tuple(patch), []).append((*patch.values(), id))
        return shapes


class Plan(NamedTuple):
    """What one batch writes, in order, and the highest message id stored once it commits.

    ``removes`` tells whether the batch deletes messages (or never writes one
    it inserted): only such a batch can take away the row of the highest id.
    """

    steps: list[Segment | Barrier]
    last_id: int
    removes: bool


def coalesce(ops: Iterable[Op], last_id: int) -> Plan:
    """Coalesce ``ops`` (one batch, in buffer order) into the steps a backend writes.

    Args:
        ops: the batch.
        last_id: the highest message id stored before it.

    Returns:
        The plan; its ``last_id`` is the new highest id (pruning and drops
        must never let an id be reused). A `Drop` with a ``why`` (cancelled,
        expired, dropped) ends its message (`Segment.end`) rather than
        deleting it; one without (a withdrawn publish) deletes it.
    """
    steps: list[Segment | Barrier] = []
    segment = Segment()
    removes = False
    ended_at = 0.0  # read from the clock at the first message that ends, not per batch
    for op in ops:
        # The cases are tried in order: the three of every message come first.
        match op:
            case Insert(queue=queue, entry=entry, claimed=claimed):
                segment.insert(queue, entry)
                if claimed:
                    # Claimed by its publishing node (shared storage): as a claim writes it.
                    segment.patch(entry.id, status=PROCESSING, attempt=1, lease_deadline=claimed)
                if entry.id > last_id:
                    last_id = entry.id
            case DeliverOp(id=id, attempt=attempt, lease_deadline=deadline):
                segment.patch(id, status=PROCESSING, attempt=attempt, lease_deadline=deadline)
            case AckOp(queue=queue, id=id, at=at):
                segment.patch(id, status=PROCESSED, settled_at=at, lease_deadline=0.0)
                segment.acked[queue] = segment.acked.get(queue, 0) + 1
            case Requeue(id=id, attempt=attempt, deliver_at=deliver_at):
                segment.patch(
                    id,
                    status=PENDING,
                    attempt=attempt,
                    redelivered=True,
                    lease_deadline=0.0,
                    deliver_at=deliver_at,
                )
            case Reschedule(id=id, deliver_at=deliver_at, priority=priority):
                segment.patch(id, deliver_at=deliver_at, priority=priority)
            case Release(id=id, attempt=attempt):
                segment.patch(id, status=PENDING, attempt=attempt, lease_deadline=0.0)
            case Fail(id=id, reason=reason, at=at):
                segment.patch(
                    id, status=FAILED, settled_at=at, last_error=reason, lease_deadline=0.0
                )
            case DeadLetter(id=id, source=source, target=target, reason=reason):
                segment.patch(
                    id,
                    queue=target,
                    status=PENDING,
                    attempt=0,
                    redelivered=False,
                    lease_deadline=0.0,
                    expires_at=0.0,
                    dead_lettered_from=source,
                    last_error=reason,
                    dedup_id=None,
                )
            case Restore(id=id, queue=queue):
                segment.patch(
                    id,
                    queue=queue,
                    status=PENDING,
                    attempt=0,
                    redelivered=False,
                    settled_at=0.0,
                    deliver_at=0.0,
                    expires_at=0.0,
                    dead_lettered_from=None,
                )
            case Drop(id=id, why=why) if why:
                ended_at = ended_at or time.time()
                segment.end(id, why, ended_at)
            case Drop(id=id):
                segment.drop(id)
                removes = True
                # A withdrawn publish's id (`withdraw_publishes`) was handed out: never again.
                if id > last_id:
                    last_id = id
            case History(ids=ids, lines=lines):
                segment.add_histories(ids, lines)
            case SetResult(id=id, result=result):
                segment.results[id] = result
            case PutQueue() | PurgeQueue() | DeleteQueue() | Trim() | FireSchedule():
                removes = removes or type(op) not in (PutQueue, FireSchedule)
                if not segment.empty:
                    steps.append(segment)
                    segment = Segment()
                steps.append(op)
    if not segment.empty:
        steps.append(segment)
    return Plan(steps, last_id, removes)


_SETTLES = (
    DeliverOp,
    AckOp,
    Requeue,
    Reschedule,
    Release,
    Fail,
    DeadLetter,
    Drop,
    Restore,
    SetResult,
)
"""The operations on one message that name it by ``id``."""


def withdraw_publishes(ops: list[Any]) -> tuple[list[Any], set[int]]:
    """A failed batch without its publishes, which will never be stored; and their ids.

    Each `Insert` becomes a `Drop` of its id (deleting nothing, unless a
    commit whose outcome was unknown did land it) and the batch's other
    operations on those messages go, and so do its schedules' fire records
    (`FireSchedule`: a fire is recorded only with its message). What is
    left are settlements and queue changes, which may still be retried.
    Anything but journal operations (a test's stand-ins) is kept as it is.
    """
    ids = {op.entry.id for op in ops if type(op) is Insert}
    if not ids:
        return ops, ids
    kept: list[Any] = []
    for op in ops:
        if type(op) is Insert:
            kept.append(Drop(op.entry.id))
        elif type(op) is FireSchedule:
            continue  # its message was in this batch: no fire without it
        elif not (isinstance(op, _SETTLES) and op.id in ids):
            kept.append(op)
    return kept, ids


def leave_out(ops: list[Any], ids: set[int]) -> list[Any]:
    """``ops`` without those on messages ``ids`` (publishes withdrawn from an earlier batch)."""
    return [op for op in ops if not (isinstance(op, _SETTLES) and op.id in ids)]

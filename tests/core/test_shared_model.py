"""Model-based test of shared mode: queue states of several nodes over one modelled database.

Hypothesis drives publishes, consumers coming and going, acks, nacks,
lease expiry and node crashes on three nodes whose `QueueState`s run in
shared mode. `Database` models what ``storage.postgres`` promises: claims
take ready rows in priority-then-id order and mark them held by the node
(counting the attempt), a publish written claimed (`Insert.claimed`) is held
by its node from the start, writes are fenced to rows no other node holds, and
a dead node's held rows come back pending and redelivered. After every
step: no message is held by two consumers, every row held in the database
is held by the live node that claimed it, and nothing published is lost;
at the end every message is acked exactly once or failed.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker_core.claims import SharedQueueState
from broker_core.journal import AckOp, DeadLetter, DeliverOp, Drop, Fail, Insert, Release, Requeue
from broker_core.messages import Entry, PublishRequest, QueueOptions
from broker_core.pending import BodyBudget

PENDING, PROCESSING, PROCESSED, FAILED = range(4)
NODES = 3
LEASE = 5.0


class Row:
    """One message as the database holds it."""

    __slots__ = ("attempt", "id", "owner", "priority", "redelivered", "status")

    def __init__(self, id: int, priority: int) -> None:
        self.id = id
        self.priority = priority
        self.status = PENDING
        self.owner: int | None = None
        self.attempt = 0
        self.redelivered = False


class Database:
    """The shared storage's promises, in memory (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}

    def claim(self, node: int, count: int) -> list[Entry]:
        ready = sorted(
            (r for r in self.rows.values() if r.status == PENDING),
            key=lambda r: (-r.priority, r.id),
        )[:count]
        entries = []
        for row in ready:
            entries.append(
                Entry(
                    row.id,
                    content=b"{}",
                    size=2,
                    created_at=0.0,
                    priority=row.priority,
                    attempt=row.attempt,
                    redelivered=row.redelivered,
                )
            )
            row.redelivered = row.redelivered or row.attempt > 0
            row.attempt += 1
            row.status, row.owner = PROCESSING, node
        return entries

    def write(self, node: int, ops: list[Any]) -> None:
        for op in ops:
            if type(op) is Insert:
                inserted = self.rows[op.entry.id] = Row(op.entry.id, op.entry.priority)
                if op.claimed:  # claimed by its publishing node as it is written
                    inserted.status, inserted.owner, inserted.attempt = PROCESSING, node, 1
                continue
            if type(op) is DeliverOp:
                continue  # the claim recorded it (the actor doesn't write it)
            row = self.rows.get(op.id)
            if row is None or row.status == PROCESSED:
                continue
            if row.status == PROCESSING and row.owner not in (node, None):
                continue  # fenced: another node holds it
            match op:
                case AckOp():
                    row.status = PROCESSED
                case Fail():
                    row.status = FAILED
                case Requeue(attempt=attempt):
                    row.status, row.attempt, row.redelivered = PENDING, attempt, True
                case Release(attempt=attempt):
                    row.status, row.attempt = PENDING, attempt
                case DeadLetter():
                    row.status = FAILED  # one queue here: the target is not modelled
                case Drop():
                    del self.rows[op.id]
                case _:
                    raise AssertionError(f"unexpected op {op!r}")

    def reap(self, node: int) -> None:
        for row in self.rows.values():
            if row.status == PROCESSING and row.owner == node:
                row.status, row.owner, row.redelivered = PENDING, None, True


class Node:
    """One broker node's state of the queue, and what its consumers hold."""

    def __init__(self, index: int, incarnation: int) -> None:
        self.id = index * 1000 + incarnation
        self.state = SharedQueueState("q", QueueOptions(max_attempts=4), budget=BodyBudget(1 << 20))
        self.consumers = 0


class SharedModel(RuleBasedStateMachine):
    """Three nodes' shared-mode states over one `Database`."""

    def __init__(self) -> None:
        super().__init__()
        self.db = Database()
        self.nodes = [Node(i, 0) for i in range(NODES)]
        self.now = 0.0
        self.next_id = 0
        self.published: set[int] = set()
        self.acked: list[int] = []

    def _ids(self) -> int:
        self.next_id += 1
        return self.next_id

    def _turn(self, node: Node) -> None:
        """What the node's actor does in one turn: deadlines, claims, dispatch, writes."""
        state = node.state
        state.tick(self.now)
        state.dispatch(self.now)
        state.balance(0)
        count = state.take_claims()
        if count:
            state.claimed(self.db.claim(node.id, count), count)
            state.dispatch(self.now)
            state.balance(0)
        self.db.write(node.id, state.take_ops())
        state.take_deliveries()

    def _everyone(self) -> None:
        for node in self.nodes:
            node.state.wake(0.0, self.now)
            self._turn(node)

    @rule(node=st.integers(0, NODES - 1), count=st.integers(1, 4), priority=st.integers(0, 9))
    def publish(self, node: int, count: int, priority: int) -> None:
        state = self.nodes[node].state
        requests = [PublishRequest(content=msgspec.Raw(b"{}"), priority=priority)] * count
        published = state.publish(requests, self.now, self._ids)
        self.db.write(self.nodes[node].id, state.take_ops())
        self.published.update(p.id for p in published)
        self._everyone()  # NOTIFY at commit

    @rule(node=st.integers(0, NODES - 1), prefetch=st.integers(1, 3))
    def subscribe(self, node: int, prefetch: int) -> None:
        target = self.nodes[node]
        target.consumers += 1
        target.state.add_consumer(target.consumers, prefetch, now=self.now)
        self._turn(target)

    @rule(node=st.integers(0, NODES - 1), data=st.data())
    def unsubscribe(self, node: int, data: st.DataObject) -> None:
        target = self.nodes[node]
        if not target.state.consumers:
            return
        consumer = data.draw(st.sampled_from(sorted(target.state.consumers)))
        target.state.remove_consumer(consumer, self.now)
        self._turn(target)
        self._everyone()

    @rule(node=st.integers(0, NODES - 1), data=st.data(), requeue=st.booleans(), ack=st.booleans())
    def settle(self, node: int, data: st.DataObject, requeue: bool, ack: bool) -> None:
        target = self.nodes[node]
        held = sorted(target.state.processing)
        if not held:
            return
        id = data.draw(st.sampled_from(held))
        if ack:
            outcome = target.state.ack([id], self.now)
            self.acked.extend(outcome.settled)
        else:
            target.state.nack([id], self.now, requeue=requeue)
        self._turn(target)
        self._everyone()

    @rule(seconds=st.sampled_from([1.0, LEASE + 1]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        for node in self.nodes:
            self._turn(node)
        self._everyone()

    @precondition(lambda self: any(n.state.processing for n in self.nodes))
    @rule(node=st.integers(0, NODES - 1))
    def crash(self, node: int) -> None:
        """kill -9: the node's memory is gone; the reaper gives its leases back."""
        dead = self.nodes[node]
        self.db.reap(dead.id)
        self.nodes[node] = Node(node, dead.id % 1000 + 1)
        self._everyone()

    @invariant()
    def one_holder_at_a_time(self) -> None:
        holders: dict[int, int] = {}
        for node in self.nodes:
            for id, entry in node.state.processing.items():
                row = self.db.rows.get(id)
                if row is None or row.status != PROCESSING or row.owner != node.id:
                    continue  # a stale lease here: its writes are fenced out
                assert id not in holders, f"message {id} held by two consumers"
                holders[id] = entry.consumer or 0
        for row in self.db.rows.values():
            if row.status == PROCESSING:
                assert row.owner in {n.id for n in self.nodes}, "held by a node that is gone"

    @invariant()
    def nothing_lost(self) -> None:
        assert self.published == set(self.db.rows), "every published message is in the database"

    def teardown(self) -> None:
        """Drain: one consumer acks everything; every message ends processed or failed once."""
        drainer = self.nodes[0]
        drainer.consumers += 1
        drainer.state.add_consumer(drainer.consumers, 50, now=self.now)
        for _ in range(200):
            self._everyone()
            held = [
                id for id, e in drainer.state.processing.items() if e.consumer == drainer.consumers
            ]
            self.acked.extend(drainer.state.ack(held, self.now).settled)
            self.now += LEASE + 1
            if all(r.status in (PROCESSED, FAILED) for r in self.db.rows.values()):
                break
        statuses = {r.id: r.status for r in self.db.rows.values()}
        assert all(status in (PROCESSED, FAILED) for status in statuses.values()), statuses
        processed = {id for id, status in statuses.items() if status == PROCESSED}
        assert processed <= set(self.acked)


SharedModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestSharedModel = SharedModel.TestCase

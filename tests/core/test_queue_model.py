"""Property-based test of `QueueState` against a reference model made of plain lists and dicts.

Hypothesis drives random publishes (priorities, delays, TTLs, dedup ids),
consumers, deliveries, settlements, time and cold-body loads; after every step
the real state's journal operations are checked against what the model
predicts, and the two are compared message by message.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from broker_core.journal import (
    DeadLetter,
    DeliverOp,
    Drop,
    Insert,
    Op,
)
from broker_core.messages import Entry, PublishRequest, QueueOptions
from broker_core.pending import BodyBudget
from broker_core.queue import QueueState
from tests.core.helpers import describe

PRIORITIES = 4
DEDUP_WINDOW_S = 5.0
LEASE_S = 3.0


@dataclass
class Message:
    """What the model knows of one message."""

    id: int
    priority: int
    size: int
    expires_at: float
    deliver_at: float
    where: str = "pending"
    attempt: int = 0
    consumer: int | None = None
    lease_deadline: float = 0.0


@dataclass
class Model:
    """The reference: where every message is and the order pending ones go out in."""

    max_attempts: int | None
    dead_letter_queue: str | None
    messages: dict[int, Message] = field(default_factory=dict)
    ready: list[deque[int]] = field(default_factory=lambda: [deque() for _ in range(PRIORITIES)])
    consumers: dict[int, tuple[int, set[int]]] = field(default_factory=dict)
    dedup: dict[str, tuple[int, float]] = field(default_factory=dict)
    next_id: int = 1
    processed: int = 0
    failed: int = 0

    def where(self, *places: str) -> list[Message]:
        return [m for m in self.messages.values() if m.where in places]

    def head(self) -> int | None:
        for dq in reversed(self.ready):
            if dq:
                return dq[0]
        return None

    def unready(self, message: Message) -> None:
        self.ready[message.priority].remove(message.id)

    def release(self, message: Message) -> None:
        """A leased message stops being held by its consumer."""
        if message.consumer is not None:
            self.consumers[message.consumer][1].discard(message.id)
        message.consumer = None
        message.lease_deadline = 0.0

    def end(self, message: Message, reason: str) -> tuple[Any, ...]:
        """A message leaves for the dead-letter queue or fails; return the expected op."""
        if self.dead_letter_queue is not None:
            message.where = "dead"
            return ("dead_letter", message.id, self.dead_letter_queue, reason)
        message.where = "failed"
        self.failed += 1
        return ("fail", message.id, reason)

    def give_back(self, message: Message, requeue: bool, reason: str) -> tuple[Any, ...]:
        """Nack or lease expiry of a leased message; return the expected op."""
        self.release(message)
        exhausted = self.max_attempts is not None and message.attempt >= self.max_attempts
        if requeue and not exhausted:
            message.where = "pending"
            self.ready[message.priority].appendleft(message.id)
            return ("requeue", message.id, message.attempt)
        return self.end(message, "max_attempts" if requeue else reason)


def copy_entry(entry: Entry) -> Entry:
    """What storage gives back for a stored message: a fresh object."""
    return Entry(
        entry.id,
        content=entry.content,
        size=entry.size,
        created_at=entry.created_at,
        priority=entry.priority,
        attempt=entry.attempt,
        redelivered=entry.redelivered,
        expires_at=entry.expires_at,
    )


class QueueMachine(RuleBasedStateMachine):
    """Random operations on one `QueueState`, checked against a `Model`."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.consumer_ids = iter(range(1, 10_000))
        self.stored: dict[int, Entry] = {}
        self.loads: list[int] = []
        self.delivered_first: list[int] = []

    @initialize(
        budget=st.sampled_from([0, 20, 1 << 20]),
        max_attempts=st.sampled_from([None, 1, 2, 3]),
        dead_letter_queue=st.sampled_from([None, "dlq"]),
        message_ttl_ms=st.sampled_from([None, 4000]),
    )
    def setup(
        self,
        budget: int,
        max_attempts: int | None,
        dead_letter_queue: str | None,
        message_ttl_ms: int | None,
    ) -> None:
        options = QueueOptions(
            max_attempts=max_attempts,
            dead_letter_queue=dead_letter_queue,
            message_ttl_ms=message_ttl_ms,
            lease=LEASE_S,
        )
        self.state = QueueState(
            "q", options, budget=BodyBudget(budget), dedup_window_s=DEDUP_WINDOW_S
        )
        self.model = Model(max_attempts, dead_letter_queue)
        self.message_ttl_ms = message_ttl_ms

    # -- checking the state's effects ------------------------------------------------

    def check_ops(self, expected: list[tuple[Any, ...]]) -> None:
        assert [describe(op) for op in self.state.take_ops()] == expected
        self.collect()

    def collect(self) -> None:
        """Drain the outboxes that aren't journal operations."""
        self.loads.extend(self.state.take_loads())
        for target, _ in self.state.take_dead_letters():
            assert target == self.model.dead_letter_queue

    def expired(self, message: Message) -> bool:
        return bool(message.expires_at) and message.expires_at <= self.now

    def replay_deliveries(self, ops: list[Op], holders: list[int | None]) -> None:
        """Check a stream of DeliverOp and expiry ops against the model's pending order."""
        model = self.model
        holders_left = deque(holders)
        for op in ops:
            match op:
                case DeliverOp(id=id, attempt=attempt, lease_deadline=deadline):
                    assert id == model.head(), f"delivered {id}, expected {model.head()}"
                    message = model.messages[id]
                    assert not self.expired(message), f"delivered expired message {id}"
                    assert attempt == message.attempt + 1
                    model.ready[message.priority].popleft()
                    message.where = "processing"
                    message.attempt = attempt
                    message.lease_deadline = deadline
                    message.consumer = holders_left.popleft()
                    if message.consumer is not None:
                        _, held = model.consumers[message.consumer]
                        held.add(id)
                    if attempt == 1:
                        self.delivered_first.append(id)
                case Drop(id=id) | DeadLetter(id=id, reason="expired"):
                    message = model.messages[id]
                    assert message.where == "pending", f"{id} expired while {message.where}"
                    assert self.expired(message), f"dropped {id} before its expiry"
                    if isinstance(op, DeadLetter):
                        assert op.target == model.dead_letter_queue
                        message.where = "dead"
                    else:
                        assert model.dead_letter_queue is None
                        message.where = "dropped"
                    model.unready(message)
                case _:
                    raise AssertionError(f"unexpected op {op!r} while delivering")
        assert not holders_left, "every delivery has a DeliverOp"

    def check_progress(self) -> None:
        """Delivery stops early only while bodies are being loaded."""
        credit = any(len(held) < prefetch for prefetch, held in self.model.consumers.values())
        if credit and self.model.head() is not None:
            assert self.loads, "dispatch stopped with credit and ready messages but no load"

    # -- rules -------------------------------------------------------------------------

    @rule(
        priority=st.integers(0, PRIORITIES - 1),
        delay_ms=st.sampled_from([None, None, 500, 2500]),
        ttl_ms=st.sampled_from([None, None, 1000, 3000]),
        dedup_id=st.sampled_from([None, None, "a", "b"]),
        size=st.integers(0, 12),
        count=st.integers(1, 3),
    )
    def publish(
        self,
        priority: int,
        delay_ms: int | None,
        ttl_ms: int | None,
        dedup_id: str | None,
        size: int,
        count: int,
    ) -> None:
        model = self.model
        content = b'"' + b"x" * size + b'"'
        requests = [
            PublishRequest(
                content=msgspec.Raw(content),
                priority=priority,
                delay_ms=delay_ms,
                ttl_ms=ttl_ms,
                dedup_id=dedup_id,
            )
            for _ in range(count)
        ]
        ids = iter(range(model.next_id, model.next_id + 100))
        results = self.state.publish(requests, self.now, lambda: next(ids))
        expected_ops = []
        for result in results:
            seen = model.dedup.get(dedup_id) if dedup_id is not None else None
            if seen is not None and seen[1] > self.now:
                assert (result.id, result.duplicate) == (seen[0], True)
                continue
            assert (result.id, result.duplicate) == (model.next_id, False)
            model.next_id += 1
            if dedup_id is not None:
                model.dedup[dedup_id] = (result.id, self.now + DEDUP_WINDOW_S)
            deliver_at = self.now + delay_ms / 1000 if delay_ms else 0.0
            ttls = [t for t in (ttl_ms, self.message_ttl_ms) if t]
            start = max(self.now, deliver_at)
            expires_at = start + min(ttls) / 1000 if ttls else 0.0
            message = Message(result.id, priority, len(content), expires_at, deliver_at)
            model.messages[result.id] = message
            if delay_ms:
                message.where = "delayed"
            else:
                model.ready[priority].append(result.id)
            expected_ops.append(("insert", result.id))
        ops = self.state.take_ops()
        assert [describe(op) for op in ops] == expected_ops
        for op in ops:
            assert isinstance(op, Insert)
            self.stored[op.entry.id] = copy_entry(op.entry)
        self.collect()

    @rule(prefetch=st.integers(1, 4))
    def add_consumer(self, prefetch: int) -> None:
        consumer_id = next(self.consumer_ids)
        self.state.add_consumer(consumer_id, prefetch)
        self.model.consumers[consumer_id] = (prefetch, set())
        self.check_ops([])

    @precondition(lambda self: self.model.consumers)
    @rule(data=st.data())
    def remove_consumer(self, data: st.DataObject) -> None:
        model = self.model
        consumer_id = data.draw(st.sampled_from(sorted(model.consumers)))
        _, held = model.consumers[consumer_id]
        expected = []
        for id in sorted(held, reverse=True):
            expected.append(model.give_back(model.messages[id], True, "consumer gone"))
        del model.consumers[consumer_id]
        assert self.state.remove_consumer(consumer_id, self.now) == len(expected)
        self.check_ops(expected)

    @rule()
    def dispatch(self) -> None:
        self.state.dispatch(self.now)
        deliveries = self.state.take_deliveries()
        ops = self.state.take_ops()
        delivered = [entry.id for _, entry in deliveries]
        assert delivered == [op.id for op in ops if isinstance(op, DeliverOp)]
        self.replay_deliveries(ops, [consumer for consumer, _ in deliveries])
        self.collect()
        self.check_progress()

    @rule(max_count=st.integers(1, 3), lease=st.sampled_from([None, 1.0]))
    def pull(self, max_count: int, lease: float | None) -> None:
        entries = self.state.pull(max_count, lease, self.now)
        ops = self.state.take_ops()
        assert [e.id for e in entries] == [op.id for op in ops if isinstance(op, DeliverOp)]
        for entry in entries:
            assert entry.lease_deadline == self.now + (lease if lease is not None else LEASE_S)
            assert entry.redelivered == (entry.attempt > 1)
        self.replay_deliveries(ops, [None] * len(entries))
        self.collect()
        if len(entries) < max_count and self.model.head() is not None:
            assert self.loads, "pull stopped short with ready messages but no load"

    @precondition(lambda self: self.model.where("processing"))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        model = self.model
        held = sorted(m.id for m in model.where("processing"))
        ids = data.draw(st.lists(st.sampled_from(held), min_size=1, max_size=3, unique=True))
        outcome = self.state.ack(ids, self.now)
        assert (outcome.settled, outcome.errors) == (ids, {})
        for id in ids:
            message = model.messages[id]
            model.release(message)
            message.where = "processed"
            model.processed += 1
        self.check_ops([("ack", id) for id in ids])

    @precondition(lambda self: self.model.where("processing"))
    @rule(data=st.data(), requeue=st.booleans())
    def nack(self, data: st.DataObject, requeue: bool) -> None:
        model = self.model
        held = sorted(m.id for m in model.where("processing"))
        ids = data.draw(st.lists(st.sampled_from(held), min_size=1, max_size=3, unique=True))
        outcome = self.state.nack(ids, self.now, requeue=requeue)
        assert (outcome.settled, outcome.errors) == (ids, {})
        expected = [model.give_back(model.messages[id], requeue, "rejected") for id in ids]
        self.check_ops(expected)

    @rule(id=st.integers(1, 40))
    def settle_unleased(self, id: int) -> None:
        """Acking a message that isn't leased changes nothing."""
        message = self.model.messages.get(id)
        if message is not None and message.where == "processing":
            return
        assert self.state.ack([id], self.now).settled == []
        self.check_ops([])

    @precondition(lambda self: self.model.where("processing"))
    @rule(data=st.data(), lease=st.sampled_from([0.5, 2.0, 6.0]))
    def touch(self, data: st.DataObject, lease: float) -> None:
        model = self.model
        id = data.draw(st.sampled_from(sorted(m.id for m in model.where("processing"))))
        assert self.state.touch(id, lease, self.now) == self.now + lease
        model.messages[id].lease_deadline = self.now + lease
        self.check_ops([])

    @rule(seconds=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 4.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        model = self.model
        self.state.tick(self.now)
        ops = self.state.take_ops()
        # Leases first, by deadline; then delays end; then TTLs run out.
        due = sorted(
            (m for m in model.where("processing") if m.lease_deadline <= self.now),
            key=lambda m: (m.lease_deadline, m.id),
        )
        expected = [model.give_back(m, True, "lease expired") for m in due]
        assert [describe(op) for op in ops[: len(expected)]] == expected
        for message in sorted(
            (m for m in model.where("delayed") if m.deliver_at <= self.now),
            key=lambda m: (m.deliver_at, m.id),
        ):
            message.where = "pending"
            model.ready[message.priority].append(message.id)
        self.replay_deliveries(ops[len(expected) :], [])
        for key, (_, until) in list(model.dedup.items()):
            if until <= self.now:
                del model.dedup[key]
        self.collect()

    @rule()
    def purge(self) -> None:
        model = self.model
        gone = model.where("pending", "delayed")
        assert self.state.purge() == len(gone)
        for message in gone:
            message.where = "purged"
        model.ready = [deque() for _ in range(PRIORITIES)]
        self.check_ops([("purge",)])

    @precondition(lambda self: self.loads)
    @rule(data=st.data())
    def lose_from_storage(self, data: st.DataObject) -> None:
        """A message asked for is deleted in storage before the load (a purge raced it)."""
        id = data.draw(st.sampled_from(self.loads))
        self.stored.pop(id, None)

    @precondition(lambda self: self.loads)
    @rule()
    def hydrate(self) -> None:
        model = self.model
        wanted, self.loads = self.loads, []
        alive = []
        for id in wanted:
            message = model.messages[id]
            if message.where != "pending":
                continue
            if id in self.stored:
                alive.append(copy_entry(self.stored[id]))
            else:
                message.where = "lost"
                model.unready(message)
        self.state.hydrate(alive, wanted)
        self.check_ops([])

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def every_message_is_in_exactly_one_place(self) -> None:
        if not hasattr(self, "state"):
            return
        state, model = self.state, self.model
        actual_ready = state.pending.ids()
        assert actual_ready == [id for dq in reversed(model.ready) for id in dq]
        delayed = sorted(state.pending.delayed_ids())
        assert delayed == sorted(m.id for m in model.where("delayed"))
        assert sorted(state.processing) == sorted(m.id for m in model.where("processing"))
        places = actual_ready + delayed + list(state.processing)
        assert len(places) == len(set(places)), "a message is in two places"

    @invariant()
    def counters_match_the_model(self) -> None:
        if not hasattr(self, "state"):
            return
        state, model = self.state, self.model
        pending = model.where("pending")
        delayed = model.where("delayed")
        assert state.pending_count == len(pending)
        assert state.delayed_count == len(delayed)
        assert state.pending_bytes == sum(m.size for m in pending + delayed)
        assert len(state.processing) == len(model.where("processing"))
        assert (state.processed, state.failed) == (model.processed, model.failed)
        assert state.published_total == len(model.messages)
        assert state.budget.used >= 0

    @invariant()
    def no_consumer_over_prefetch(self) -> None:
        if not hasattr(self, "state"):
            return
        for consumer_id, (prefetch, held) in self.model.consumers.items():
            assert self.state.consumers[consumer_id].held == held
            assert len(held) <= prefetch

    @invariant()
    def leases_match(self) -> None:
        if not hasattr(self, "state"):
            return
        for id, entry in self.state.processing.items():
            message = self.model.messages[id]
            assert (entry.attempt, entry.lease_deadline) == (
                message.attempt,
                message.lease_deadline,
            )
            assert entry.consumer == message.consumer


QueueMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
test_queue_state_matches_model = QueueMachine.TestCase

"""The `QueueState` model test extended with back-off, nack delays, cancel, reschedule and pause.

`RetryMachine` runs every rule of `test_queue_model.QueueMachine` on a queue
that may have a retry policy, and adds its own: nack with a delay, cancel,
reschedule, pause (until an instant or until resumed) and resume. The model
computes each back-off from the policy's formula on its own; any sequence
must agree with it, message by message and op by op.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from hypothesis import settings, strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from broker_core.errors import InvalidTransition
from broker_core.journal import DeliverOp, Requeue, Reschedule
from broker_core.messages import QueueOptions
from broker_core.pending import BodyBudget
from broker_core.queue import QueueState
from broker_core.retry import Backoff, RetryPolicy
from tests.core.test_queue_model import LEASE_S, Message, Model, QueueMachine

DRAW = 0.25
"""The jitter's random draw, fixed: the model applies the same."""

POLICIES = [
    None,
    RetryPolicy(backoff=Backoff.FIXED, min_ms=500, max_ms=500, jitter=0.0),
    RetryPolicy(backoff=Backoff.LINEAR, min_ms=500, max_ms=1500, jitter=0.0, on=["nack"]),
    RetryPolicy(min_ms=250, max_ms=2000, multiplier=3.0, jitter=0.2),
    RetryPolicy(min_ms=1000, max_ms=4000, on=["expired"]),
]


def model_wait_ms(policy: RetryPolicy | None, n: int, trigger: str, delay_ms: int | None) -> float:
    """The back-off as the contract states it (DESIGN.md, Retries)."""
    if delay_ms is not None:
        return float(delay_ms)
    if policy is None or trigger not in policy.on:
        return 0.0
    if policy.backoff == "fixed":
        wait = float(policy.min_ms)
    elif policy.backoff == "linear":
        wait = min(float(policy.max_ms), float(policy.min_ms) * n)
    else:
        wait = min(float(policy.max_ms), policy.min_ms * policy.multiplier ** (n - 1))
    return wait * (1.0 + policy.jitter * (2.0 * DRAW - 1.0)) if policy.jitter else wait


class RetryModel(Model):
    """`Model` with back-off: a requeue may wait on the delay heap."""

    policy: RetryPolicy | None = None
    now: float = 0.0
    delay_ms: int | None = None

    def give_back(self, message: Message, requeue: bool, reason: str) -> tuple[Any, ...]:
        trigger = {"lease expired": "expired", "consumer gone": "gone"}.get(reason, "nack")
        self.release(message)
        exhausted = self.max_attempts is not None and message.attempt >= self.max_attempts
        if not requeue or exhausted:
            return self.end(message, "max_attempts" if requeue else reason)
        wait = model_wait_ms(self.policy, message.attempt, trigger, self.delay_ms)
        if wait <= 0:
            message.where = "pending"
            self.ready[message.priority].appendleft(message.id)
            return ("requeue", message.id, message.attempt)
        message.where = "delayed"
        message.deliver_at = self.now + wait / 1000
        return ("requeue", message.id, message.attempt, message.deliver_at)


class RetryMachine(QueueMachine):
    """`QueueMachine` plus retry policy, nack delay, cancel, reschedule and pause."""

    @initialize(
        budget=st.sampled_from([0, 20, 1 << 20]),
        max_attempts=st.sampled_from([None, 2, 4]),
        dead_letter_queue=st.sampled_from([None, "dlq"]),
        message_ttl_ms=st.sampled_from([None, 4000]),
        policy=st.sampled_from(POLICIES),
    )
    def setup_retry(
        self,
        budget: int,
        max_attempts: int | None,
        dead_letter_queue: str | None,
        message_ttl_ms: int | None,
        policy: RetryPolicy | None,
    ) -> None:
        options = QueueOptions(
            max_attempts=max_attempts,
            dead_letter_queue=dead_letter_queue,
            message_ttl_ms=message_ttl_ms,
            lease=LEASE_S,
            retry=policy,
        )
        self.state = QueueState("q", options, budget=BodyBudget(budget), dedup_window_s=5.0)
        self.state.draw = lambda: DRAW
        self.model = RetryModel(max_attempts, dead_letter_queue)
        self.model.policy = policy
        self.model.now = self.now
        self.message_ttl_ms = message_ttl_ms
        self.paused_until = 0.0
        take_ops = self.state.take_ops

        def take_and_store() -> list[Any]:
            # Storage's copy follows the ops, as the real one does: a body
            # read back after a back-off or a reschedule has its attempt and priority.
            ops = take_ops()
            for op in ops:
                stored = self.stored.get(getattr(op, "id", -1))
                if stored is None:
                    continue
                if isinstance(op, DeliverOp):
                    stored.attempt = op.attempt
                elif isinstance(op, Requeue):
                    stored.attempt = op.attempt
                    stored.redelivered = True
                elif isinstance(op, Reschedule):
                    stored.priority = op.priority
            return ops

        self.state.take_ops = take_and_store  # type: ignore[method-assign]

    # The base machine's own initialize must not run: this one replaces it.
    setup = None  # type: ignore[assignment]

    @property
    def paused(self) -> bool:
        return self.paused_until > self.now

    def check_progress(self) -> None:
        if not self.paused:
            super().check_progress()

    # -- rules of the base machine, aware of the pause -----------------------------

    @rule()
    def dispatch(self) -> None:
        if self.paused:
            self.state.dispatch(self.now)
            assert self.state.take_deliveries() == []
            self.check_ops([])
            return
        super().dispatch()

    @rule(max_count=st.integers(1, 3), lease=st.sampled_from([None, 1.0]))
    def pull(self, max_count: int, lease: float | None) -> None:
        if self.paused:
            assert self.state.pull(max_count, lease, self.now) == []
            self.check_ops([])
            return
        super().pull(max_count, lease)

    @precondition(lambda self: self.model.where("processing"))
    @rule(
        data=st.data(),
        requeue=st.booleans(),
        delay_ms=st.sampled_from([None, None, 0, 700, 2500]),
    )
    def nack(self, data: st.DataObject, requeue: bool, delay_ms: int | None) -> None:
        model = self.model
        assert isinstance(model, RetryModel)
        held = sorted(m.id for m in model.where("processing"))
        ids = data.draw(st.lists(st.sampled_from(held), min_size=1, max_size=3, unique=True))
        outcome = self.state.nack(ids, self.now, requeue=requeue, delay_ms=delay_ms)
        assert (outcome.settled, outcome.errors) == (ids, {})
        model.delay_ms = delay_ms
        try:
            expected = [model.give_back(model.messages[id], requeue, "rejected") for id in ids]
        finally:
            model.delay_ms = None
        self.check_ops(expected)

    @rule(seconds=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 4.0]))
    def advance(self, seconds: float) -> None:
        assert isinstance(self.model, RetryModel)
        self.model.now = self.now + seconds
        super().advance(seconds)

    # -- cancel, reschedule, pause ---------------------------------------------------

    def take_out(self, message: Message) -> None:
        if message.where == "pending":
            self.model.unready(message)

    @rule(id=st.integers(1, 30))
    def cancel(self, id: int) -> None:
        message = self.model.messages.get(id)
        where = message.where if message is not None else None
        if where == "processing":
            try:
                self.state.cancel(id)
            except InvalidTransition:
                pass
            else:
                raise AssertionError("cancelled a processing message")
            self.check_ops([])
            return
        found = self.state.cancel(id)
        assert found == (where in ("pending", "delayed")), (id, where)
        if not found:
            self.check_ops([])
            return
        assert message is not None
        self.take_out(message)
        message.where = "cancelled"
        self.check_ops([("drop", id)])

    @rule(
        id=st.integers(1, 30),
        delay=st.sampled_from([None, -1.0, 0.0, 0.5, 3.0]),
        priority=st.sampled_from([None, 0, 3]),
    )
    def reschedule(self, id: int, delay: float | None, priority: int | None) -> None:
        message = self.model.messages.get(id)
        where = message.where if message is not None else None
        deliver_at = None if delay is None else self.now + delay
        if where == "processing":
            try:
                self.state.reschedule(id, deliver_at, priority, self.now)
            except InvalidTransition:
                pass
            else:
                raise AssertionError("rescheduled a processing message")
            self.check_ops([])
            return
        found = self.state.reschedule(id, deliver_at, priority, self.now)
        assert found == (where in ("pending", "delayed")), (id, where)
        if not found:
            self.check_ops([])
            return
        assert message is not None
        current = message.deliver_at if where == "delayed" else 0.0
        self.take_out(message)
        if priority is not None:
            message.priority = priority
        at = current if deliver_at is None else deliver_at
        if at > self.now:
            message.where = "delayed"
            message.deliver_at = at
        else:
            at = message.deliver_at = 0.0
            message.where = "pending"
            self.model.ready[message.priority].append(id)
        self.check_ops([("reschedule", id, at, message.priority)])

    @rule(until=st.sampled_from([None, 0.5, 2.0]))
    def pause(self, until: float | None) -> None:
        from datetime import UTC, datetime

        instant = None if until is None else datetime.fromtimestamp(self.now + until, UTC)
        options = msgspec.structs.replace(self.state.options, paused=True, paused_until=instant)
        self.state.set_options(options)
        self.paused_until = math.inf if instant is None else instant.timestamp()
        self.check_ops([])

    @rule()
    def resume(self) -> None:
        options = msgspec.structs.replace(self.state.options, paused=False, paused_until=None)
        self.state.set_options(options)
        self.paused_until = 0.0
        self.check_ops([])

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def pause_agrees(self) -> None:
        if not hasattr(self, "state"):
            return
        assert self.state.paused(self.now) == self.paused
        if self.paused and self.paused_until < math.inf:
            deadline = self.state.next_deadline()
            assert deadline is not None and deadline <= self.paused_until

    @invariant()
    def delays_match(self) -> None:
        if not hasattr(self, "state"):
            return
        actual = {e.id: e.deliver_at for _, _, e in self.state.pending._delayed}
        expected = {m.id: m.deliver_at for m in self.model.where("delayed")}
        assert actual == expected

    @invariant()
    def nothing_delivered_while_paused(self) -> None:
        if hasattr(self, "state") and self.paused:
            assert self.state.take_deliveries() == []


def test_paused_until_resumes_by_itself() -> None:
    """A pause until an instant ends at that instant: `tick` clears it and delivery goes on."""
    from datetime import UTC, datetime

    state = QueueState("q", QueueOptions(), budget=BodyBudget(1 << 20))
    until = datetime.fromtimestamp(1005.0, UTC)
    state.set_options(QueueOptions(paused=True, paused_until=until))
    assert state.paused(1004.9)
    assert state.next_deadline() == 1005.0
    state.tick(1005.0)
    assert not state.paused(1005.0)
    assert state.next_deadline() is None


RetryMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_queue_state_with_retries_matches_model = RetryMachine.TestCase

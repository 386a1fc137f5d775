"""Property-based test of message groups in `QueueState` against a model of plain dicts.

Hypothesis publishes into a few groups (and ungrouped), pulls one message at a
time, acks, nacks (at once or with a back-off), lets leases expire and serves
cold-body loads; after every step it checks, against the model:

* order per group: a message of a group is delivered only when every earlier
  message of its group is done or in flight;
* at most ``group_concurrency`` messages of a group in flight (a message in
  back-off holds its group's slot);
* the fairness bound: while a group (or the ungrouped slot) can deliver, no
  other one is served twice before it is served once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from broker_core import groups as groups_module
from broker_core.messages import Entry, PublishRequest, QueueOptions
from broker_core.pending import BodyBudget
from broker_core.queue import QueueState
from broker_core.retry import RetryPolicy

GROUPS = ["a", "b", "c", None]
LEASE_S = 5.0


class GroupsMachine(RuleBasedStateMachine):
    """Drives one `QueueState` with groups and checks order, concurrency and fairness."""

    @initialize(
        concurrency=st.integers(1, 3),
        budget=st.sampled_from([40, 10_000]),
        backoff=st.booleans(),
        big_group=st.sampled_from([2, 4, 256]),
    )
    def start(self, concurrency: int, budget: int, backoff: bool, big_group: int) -> None:
        # Small thresholds make groups switch from a list to a deque within a run.
        self.big_group = groups_module.BIG_GROUP
        groups_module.BIG_GROUP = big_group
        retry = (
            RetryPolicy(min_ms=1000, max_ms=1000, multiplier=1.0, jitter=0.0) if backoff else None
        )
        self.options = QueueOptions(group_concurrency=concurrency, lease=LEASE_S, retry=retry)
        self.state = QueueState("q", self.options, budget=BodyBudget(budget))
        self.now = 1000.0
        self.next = 0
        self.group_of: dict[int, str | None] = {}
        self.size_of: dict[int, int] = {}
        self.done: set[int] = set()
        self.in_flight: set[int] = set()
        self.waits: dict[str, dict[str, int]] = defaultdict(dict)

    def _new_id(self) -> int:
        self.next += 1
        return self.next

    def _slot(self, id: int) -> str:
        return self.group_of[id] or ""

    def _held(self, group: str) -> int:
        """In flight or in back-off: messages of ``group`` that hold a slot."""
        state = self.state
        return state.pending.in_flight(group)

    def _can_deliver(self) -> set[str]:
        state = self.state
        out = set()
        for id in state.pending.ids():
            slot = self._slot(id)
            if slot == "" or self._held(slot) < self.options.group_concurrency:
                out.add(slot)
        return out

    @rule(group=st.sampled_from(GROUPS), count=st.integers(1, 4), size=st.integers(1, 20))
    def publish(self, group: str | None, count: int, size: int) -> None:
        requests = [
            PublishRequest(content=msgspec.Raw(b"1" * size), group=group) for _ in range(count)
        ]
        for published in self.state.publish(requests, self.now, self._new_id):
            self.group_of[published.id] = group
            self.size_of[published.id] = size
        self.state.take_ops()

    @rule()
    def pull_one(self) -> None:
        before = self._can_deliver()
        [*got] = self.state.pull(1, None, self.now)
        self.state.take_ops()
        for entry in got:
            self._delivered(entry, before)

    def _delivered(self, entry: Entry, eligible: set[str]) -> None:
        id = entry.id
        group = self.group_of[id]
        assert entry.group == group
        assert id not in self.done and id not in self.in_flight
        if group is not None:
            # A message in back-off holds one of its group's slots (as if in flight).
            backing_off = set(self.state.pending.delayed_ids())
            earlier = [m for m, g in self.group_of.items() if g == group and m < id]
            for m in earlier:
                assert m in self.done or m in self.in_flight or m in backing_off, (
                    f"{id} overtook {m} in {group}"
                )
        self.in_flight.add(id)
        slot = group or ""
        self.waits[slot] = {}
        for other in eligible - {slot}:
            served = self.waits[other].get(slot, 0) + 1
            assert served <= 1, f"{slot} served twice while {other} could deliver"
            self.waits[other][slot] = served

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        if not self.in_flight:
            return
        id = data.draw(st.sampled_from(sorted(self.in_flight)))
        assert self.state.ack([id], self.now).settled == [id]
        self.in_flight.discard(id)
        self.done.add(id)
        self.state.take_ops()

    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        if not self.in_flight:
            return
        id = data.draw(st.sampled_from(sorted(self.in_flight)))
        assert self.state.nack([id], self.now).settled == [id]
        self.in_flight.discard(id)
        self.state.take_ops()

    @rule(seconds=st.sampled_from([0.5, 2.0, 6.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.state.tick(self.now)
        self.in_flight &= set(self.state.processing)
        self.state.take_ops()

    @rule()
    def serve_loads(self) -> None:
        ids = self.state.take_loads()
        entries = [
            Entry(
                id,
                content=b"1" * self.size_of[id],
                size=self.size_of[id],
                created_at=0.0,
                group=self.group_of[id],
            )
            for id in ids
            if id not in self.done and id not in self.in_flight
        ]
        self.state.hydrate(entries, ids)

    def teardown(self) -> None:
        if hasattr(self, "big_group"):
            groups_module.BIG_GROUP = self.big_group

    @invariant()
    def at_most_n_in_flight(self) -> None:
        if not hasattr(self, "state"):
            return
        per_group: dict[str | None, int] = defaultdict(int)
        for id in self.state.processing:
            per_group[self.group_of[id]] += 1
        for group, count in per_group.items():
            if group is not None:
                assert count <= self.options.group_concurrency
                assert count <= self._held(group)

    @invariant()
    def counts_agree(self) -> None:
        if not hasattr(self, "state"):
            return
        recount: Any = self.state.pending.recount()
        assert recount.ready == self.state.pending.count
        assert recount.bytes == self.state.pending.bytes
        # Every message is somewhere exactly once.
        pending = self.state.pending.ids() + self.state.pending.delayed_ids()
        assert len(pending) == len(set(pending))
        assert set(pending) | self.in_flight | self.done == set(self.group_of)


GroupsMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestGroups = GroupsMachine.TestCase

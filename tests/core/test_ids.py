"""Tests of `NodeIds`: ids of nodes sharing a database never collide and keep increasing."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from broker_core.ids import SLOTS, NodeIds, slot_of

T0 = 1_800_000_000.25


class Clock:
    """A settable clock."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ids_carry_their_slot_and_fit_in_a_javascript_number() -> None:
    """Every id names its node's slot and stays below 2**53."""
    for slot in (0, 1, SLOTS - 1):
        id = NodeIds(slot, clock=Clock())()
        assert slot_of(id) == slot
        assert 0 < id < 2**53


def test_a_slot_out_of_range_is_refused() -> None:
    """Slots are 0 to SLOTS - 1."""
    with pytest.raises(ValueError, match="slot"):
        NodeIds(SLOTS)


def test_ids_run_ahead_of_the_clock_when_a_second_is_spent() -> None:
    """More than 65,536 ids in one second borrow the next second, still increasing."""
    make = NodeIds(5, clock=Clock())
    ids = [make() for _ in range(70_000)]
    assert ids == sorted(set(ids))
    assert {slot_of(id) for id in ids} == {5}


def test_ids_sort_by_second_across_nodes() -> None:
    """An id made a second later sorts after every node's earlier ids."""
    clock = Clock()
    a, b = NodeIds(7, clock=clock), NodeIds(2, clock=clock)
    early = [a(), b()]
    clock.now += 1
    assert min(a(), b()) > max(early)


def test_ids_start_after_the_floor_even_with_a_clock_behind() -> None:
    """A node restarted with its clock behind the stored ids makes later ids anyway."""
    ahead = NodeIds(3, clock=Clock(T0 + 3600))
    stored = [ahead() for _ in range(10)]
    again = NodeIds(3, floor=max(stored), clock=Clock(T0))
    assert again() > max(stored)


@given(
    st.lists(
        st.tuples(st.integers(0, SLOTS - 1), st.floats(-5, 5)),
        min_size=1,
        max_size=300,
    )
)
def test_nodes_never_make_the_same_id(steps: list[tuple[int, float]]) -> None:
    """Whatever the interleaving and clock jumps, no two ids are equal and each slot's increase."""
    clock = Clock()
    makers: dict[int, NodeIds] = {}
    made: dict[int, list[int]] = {}
    for slot, jump in steps:
        clock.now = max(0.0, clock.now + jump)
        maker = makers.setdefault(slot, NodeIds(slot, clock=clock))
        made.setdefault(slot, []).append(maker())
    every = [id for ids in made.values() for id in ids]
    assert len(every) == len(set(every))
    for ids in made.values():
        assert ids == sorted(ids)

"""Message ids that several broker nodes make without asking each other.

One node (SQLite) counts ids up from the highest stored one. Nodes that share
a database (PostgreSQL) each make ids from the clock and their node slot, as
Twitter's Snowflake does: ``seconds << 22 | slot << 16 | sequence``, 53 bits
in all so that JavaScript's numbers (the dashboard's) hold them exactly.
Ids from different nodes never collide (slots are unique among live nodes)
and sort by publish second across nodes, so ``ORDER BY id`` is fair to every
node's publishers. Within one node ids strictly increase even when the clock
steps back or more than 65,536 ids are asked for in one second (the counter
then runs ahead of the clock).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["SLOTS", "NodeIds", "slot_of"]

SLOTS = 64
"""How many nodes may share a database at once."""
_SLOT_SHIFT = 16
_TIME_SHIFT = 22
_SEQUENCE_MASK = (1 << _SLOT_SHIFT) - 1
_EPOCH_S = 1_735_689_600
"""2025-01-01T00:00:00Z: 31 bits of seconds from here last until 2093."""


def slot_of(id: int) -> int:
    """The slot of the node that made ``id``."""
    return (id >> _SLOT_SHIFT) & (SLOTS - 1)


class NodeIds:
    """Makes the ids of one node slot; call it for the next id.

    Args:
        slot: the node's slot, ``0 <= slot < SLOTS``.
        floor: an id the new ones must be greater than (the highest stored).
        clock: seconds since the epoch.
    """

    __slots__ = ("_clock", "_last", "_slot_bits")

    def __init__(self, slot: int, floor: int = 0, clock: Callable[[], float] = time.time) -> None:
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot must be in [0, {SLOTS}), not {slot}")
        self._slot_bits = slot << _SLOT_SHIFT
        self._clock = clock
        # As if the floor's whole second were spent by this slot: every id
        # made from now on is in a later second than anything stored.
        self._last = (floor >> _TIME_SHIFT << _TIME_SHIFT) | self._slot_bits | _SEQUENCE_MASK

    def __call__(self) -> int:
        """The next id: greater than every id this object made or was floored at."""
        second = int(self._clock()) - _EPOCH_S
        last = self._last
        last_second = last >> _TIME_SHIFT
        if second > last_second:
            id = (second << _TIME_SHIFT) | self._slot_bits
        elif (last & _SEQUENCE_MASK) < _SEQUENCE_MASK:
            id = last + 1
        else:
            # This second's sequence is spent: borrow the next second.
            id = ((last_second + 1) << _TIME_SHIFT) | self._slot_bits
        self._last = id
        return id

"""Scaling: end-to-end throughput across 1, 4, 16 queues and 1, 10, 100 consumers.

Each point is the end-to-end `phases.flow` with the same ``count`` messages:

* **queues**: one producer process publishes round-robin to N queues
  (``window`` in flight in all); one consumer process holds one
  subscription per queue on one connection;
* **consumers**: one queue; one consumer process opens N connections, one
  subscription each, competing for the messages.

The total prefetch stays about the same (``prefetch // N`` per
subscription, at least 10), so a point measures the cost of spreading the
same work over more queues or consumers, not of more credit. The client
processes stay two whatever N is: on two cores, more processes would
measure the scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .phases import flow, queue_names

if TYPE_CHECKING:
    from .phases import System
    from .workload import Plan

__all__ = ["AXES", "point", "prefetch_for"]

AXES = ("queues", "consumers")


def prefetch_for(plan: Plan, n: int) -> int:
    """Each subscription's prefetch when the work is spread over ``n``."""
    return max(10, plan.prefetch // n)


def point(system: System, plan: Plan, axis: str, n: int, run: int) -> dict[str, Any]:
    """One run of one scaling point."""
    prefetch = prefetch_for(plan, n)
    if axis == "queues":
        queues = queue_names(f"q{n}", run, n)
        return flow(system, plan, queues, consumers=1, prefetch=prefetch)
    if axis == "consumers":
        return flow(system, plan, queue_names(f"c{n}", run), consumers=n, prefetch=prefetch)
    raise ValueError(f"unknown scaling axis {axis!r}")

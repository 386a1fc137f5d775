"""Python's garbage collector: what startup built is frozen out of its passes, and its passes timed.

A full pass of the collector (generation 2) walks every tracked object and
stops the event loop while it does. What the broker builds at startup
(Litestar's routes and schemas, the GraphQL schema, uvicorn, the queues
restored from storage) is about 90,000 objects that live as long as the
process; under load, a full pass came about every half second and took
30-90 ms each, visible as the REST publish p99
(``python -m benchmarks.gc_pauses``). `freeze_startup_objects`, called
once the broker is serving, moves them to the permanent generation, which
the collector never walks again. Message entries are not tracked at all
(`broker_core.messages.Entry`).

`CollectorPauses` counts and times every pass per generation for
``/metrics``, so a pause that comes back is seen in production.
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["GENERATIONS", "CollectorPauses", "freeze_startup_objects"]

GENERATIONS = 3
"""The collector's generations (0, 1 and 2, a full pass)."""


def freeze_startup_objects() -> int:
    """Collect once, then freeze every object alive now; return how many are frozen.

    For the process that serves (``broker serve``), once startup is over:
    frozen objects are never collected, so a cycle among them that becomes
    garbage later stays in memory. Startup objects live as long as the
    process anyway.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class CollectorPauses:
    """How many passes of each generation ran, the time they took and the longest one.

    `install` registers it in `gc.callbacks` (process-wide), `remove` takes it out.
    """

    def __init__(self) -> None:
        self.passes = [0] * GENERATIONS
        self.seconds = [0.0] * GENERATIONS
        self.longest_s = 0.0
        self._started = 0.0

    def install(self) -> None:
        """Start counting."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        """Stop counting."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._started
        generation = info["generation"]
        self.passes[generation] += 1
        self.seconds[generation] += elapsed
        if elapsed > self.longest_s:
            self.longest_s = elapsed

"""Pruning processed messages in batches until the backlog is gone or the time is spent.

Both backends keep processed messages for browsing (``processed_retention_s``
and ``processed_retention_count`` per queue) and delete the rest in batches
of `PRUNE_BATCH` rows, each in a short transaction of its own so that commits
never wait long behind a prune. One pass repeats batches while they come
back full, for at most `PRUNE_BUDGET_S`: under a sustained load of thousands
of acks per second, one batch per pass would fall behind for good.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["PRUNE_BATCH", "PRUNE_BUDGET_S", "prune_in_batches"]

PRUNE_BATCH = 5000
"""Rows one statement of a prune deletes at most."""
PRUNE_BUDGET_S = 1.0
"""How long one prune pass may go on deleting full batches."""


async def prune_in_batches(batch: Callable[[], Awaitable[tuple[int, bool]]]) -> int:
    """Run ``batch`` (``-> (deleted, full)``) while it comes back full, within the budget.

    Returns how many rows were deleted in all.
    """
    deadline = time.monotonic() + PRUNE_BUDGET_S
    deleted = 0
    while True:
        count, full = await batch()
        deleted += count
        if not full or time.monotonic() >= deadline:
            return deleted

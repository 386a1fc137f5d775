"""`DedupWindow`: the ``dedup_id`` values a queue remembers, and for how long.

A publish whose ``dedup_id`` was seen within the window answers the first
message's id instead of making a new one (`QueueState.publish`). The window
outlives the message: an acked message's id still answers a repeat.
"""

from __future__ import annotations

from collections import deque

__all__ = ["DedupWindow"]


class DedupWindow:
    """``dedup_id`` -> ``(message id, created_at)`` for ``window_s`` seconds after the publish."""

    __slots__ = ("_order", "_seen", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._seen: dict[str, tuple[int, float, float]] = {}
        self._order: deque[tuple[float, str]] = deque()

    def __contains__(self, dedup_id: str) -> bool:
        return dedup_id in self._seen

    def get(self, dedup_id: str) -> tuple[int, float] | None:
        """``(id, created_at)`` of the message first published with ``dedup_id``, or ``None``."""
        seen = self._seen.get(dedup_id)
        return None if seen is None else (seen[0], seen[1])

    def remember(self, dedup_id: str, id: int, created_at: float) -> None:
        """Message ``id`` was published with ``dedup_id`` at ``created_at``."""
        expires = created_at + self.window_s
        self._seen[dedup_id] = (id, created_at, expires)
        # Another node's clock may be a little off: close enough to keep the order for pruning.
        self._order.append((expires, dedup_id))

    def forget(self, ids: set[int]) -> None:
        """Forget the dedup ids that named a message in ``ids`` (its publish was withdrawn)."""
        for dedup_id in [key for key, seen in self._seen.items() if seen[0] in ids]:
            del self._seen[dedup_id]

    def next_deadline(self) -> float | None:
        """When the oldest remembered id is due to be forgotten, or ``None``."""
        return self._order[0][0] if self._order else None

    def prune(self, now: float) -> None:
        """Forget the ids whose window ended by ``now``."""
        order = self._order
        while order and order[0][0] <= now:
            _, dedup_id = order.popleft()
            seen = self._seen.get(dedup_id)
            if seen is not None and seen[2] <= now:
                del self._seen[dedup_id]

"""`Consumer`: a push consumer of one queue, as its `QueueState` keeps it.

Its prefetch is the most deliveries it may hold unacked; `credit` is what is
left of it. The state delivers only to consumers with credit.
"""

from __future__ import annotations

__all__ = ["Consumer"]


class Consumer:
    """A push consumer: its prefetch (credit ceiling) and the messages it holds."""

    __slots__ = ("held", "id", "label", "prefetch", "since")

    def __init__(self, id: int, prefetch: int, label: str = "", since: float = 0.0) -> None:
        self.id = id
        self.prefetch = prefetch
        self.label = label
        self.since = since
        self.held: set[int] = set()

    @property
    def credit(self) -> int:
        """How many more deliveries it may receive now."""
        return self.prefetch - len(self.held)

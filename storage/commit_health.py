"""Commit health, shared by both backends' writers: degraded or not, counters, retry backoff.

A failed commit fails its batch's future (its publishers get 503), turns
the writer `CommitHealth.degraded` (publishes are refused up front) and is
retried, waiting `FIRST_RETRY_S` and doubling up to `LAST_RETRY_S`, until it
commits; the first commit through recovers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from .errors import StorageUnavailable

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "FIRST_RETRY_S",
    "LAST_RETRY_S",
    "BatchStats",
    "CommitHealth",
    "ignore_unretrieved",
]


class BatchStats:
    """Counters of the commits so far (for ``/metrics``)."""

    __slots__ = ("batches", "failures", "last_error", "ops", "seconds")

    def __init__(self) -> None:
        self.batches = 0
        self.ops = 0
        self.seconds = 0.0
        self.failures = 0
        self.last_error: str | None = None


FIRST_RETRY_S = 0.05
"""The wait before a failed batch is tried again; it doubles with each failure..."""
LAST_RETRY_S = 2.0
"""...up to this."""


class CommitHealth:
    """Whether commits go through (`degraded`), and their counters: what both writers keep."""

    def __init__(self) -> None:
        self.degraded: str | None = None
        self.stats = BatchStats()

    def _failed(self, exc: Exception) -> StorageUnavailable:
        """Count a failed commit, degrade (logged once), and return the batch's error."""
        reason = f"{type(exc).__name__}: {exc}"
        self.stats.failures += 1
        self.stats.last_error = reason
        if self.degraded is None:
            logger.error("storage commit failed, retrying", reason=reason)
        self.degraded = reason
        return StorageUnavailable(reason)

    def _committed(self, ops: int, seconds: float) -> None:
        """Count a committed batch of ``ops`` operations; recover if degraded."""
        self.stats.batches += 1
        self.stats.ops += ops
        self.stats.seconds += seconds
        if self.degraded is not None:
            logger.info("storage recovered")
            self.degraded = None


def ignore_unretrieved(future: asyncio.Future[None]) -> None:
    """A done callback that marks a batch's error as seen: nobody may await a cast's batch."""
    if not future.cancelled():
        future.exception()

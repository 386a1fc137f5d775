"""Commit health, shared by both backends' writers: degraded or not, counters, retry backoff.

When a commit fails, the batch's future fails (its publishers get 503) and
its publishes are withdrawn for good: an error answer means the message is
not stored and never will be, so a client that retries makes no duplicate.
The broker takes them out of its queues when it sees the future fail. The
rest of the batch (settlements, queue changes) is kept: after a failure that
may clear (a full disk, a lost connection) the writer turns
`CommitHealth.degraded` (publishes are refused up front) and retries it,
waiting `FIRST_RETRY_S` and doubling up to `LAST_RETRY_S`, until it commits;
after one that retrying can't fix (a constraint violated, bad data) it is
tried once more without the publishes, then given up, and the writer goes
on with the next batch. The first commit through recovers.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from loguru import logger

from .coalesce import leave_out, withdraw_publishes
from .errors import StorageUnavailable

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

__all__ = [
    "FIRST_RETRY_S",
    "LAST_RETRY_S",
    "BatchStats",
    "CommitHealth",
    "Retry",
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


class Retry(enum.Enum):
    """What to do with what is left of a batch after a failed commit."""

    NOW = "now"
    LATER = "later"
    NEVER = "never"


def _never_permanent(exc: Exception) -> bool:
    return False


class CommitHealth:
    """Whether commits go through (`degraded`), their counters, and what a failed batch leaves.

    What both writers keep. Args:
        permanent: whether a commit error is one that retrying can't fix
            (the backend knows its driver's errors); by default none is.
    """

    def __init__(self, permanent: Callable[[Exception], bool] | None = None) -> None:
        self.degraded: str | None = None
        self.stats = BatchStats()
        self._permanent = permanent or _never_permanent
        self._withdrawn: set[int] = set()

    def _screen(self, ops: list[Any]) -> list[Any]:
        """``ops`` without those on publishes withdrawn from an earlier batch.

        A consumer may have been handed such a message before its batch
        failed, and its ack be written before the broker forgot it. The set
        grows only with publishes that failed to commit, which a degraded
        writer refuses up front.
        """
        return leave_out(ops, self._withdrawn) if self._withdrawn else ops

    def _failed(
        self, exc: Exception, ops: list[Any], first: bool
    ) -> tuple[StorageUnavailable, list[Any], Retry]:
        """Count a failed commit of ``ops``; return the batch's error, what is left, when to retry.

        At the batch's ``first`` failure its publishes are withdrawn (their
        publishers get the error). An error retrying can fix degrades the
        writer (logged once) and the rest is retried later; otherwise the
        rest is retried at once if the withdrawal changed it, else given up.
        """
        reason = f"{type(exc).__name__}: {exc}"
        self.stats.failures += 1
        self.stats.last_error = reason
        rest = ops
        if first:
            rest, withdrawn = withdraw_publishes(ops)
            self._withdrawn |= withdrawn
        error = StorageUnavailable(reason)
        if self._permanent(exc):
            if rest is not ops:
                logger.error("storage commit failed, retrying without its publishes", reason=reason)
                return error, rest, Retry.NOW
            logger.error(
                "storage commit failed for good, batch given up", reason=reason, ops=len(ops)
            )
            return error, [], Retry.NEVER
        if self.degraded is None:
            logger.error("storage commit failed, retrying", reason=reason)
        self.degraded = reason
        return error, rest, Retry.LATER

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

"""`WriteBehind`: PostgreSQL's write-behind buffer, group commit in an asyncio task.

SQLite's counterpart is a thread (`storage.sqlite.writer`). Operations are
appended synchronously to the open batch; one flusher task commits batches
one after the other, each in one transaction. While a batch commits, the
next one fills, so a busy broker commits hundreds of operations per
transaction and an idle one commits a lone operation at once. A batch's
future resolves when it committed; publishers await it before confirming.

Settlements that nobody awaits (``lazy``: acks, history lines) may wait
for company (``settle_linger_s``): they commit with the next publish or
other urgent operation, or once they have waited that long. Losing them in
a crash only redelivers a message, marked redelivered; at a steady rate
they stop costing a transaction each (SQLite's writer does the same). An
empty write (a confirm waiting for what is buffered) and `flush` commit at
once.

When a commit fails, the batch's future fails (its publishers get 503) and
its publishes are withdrawn for good; the rest is retried with backoff or
given up, as `storage.commit_health` says.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING, Generic, TypeVar

from loguru import logger

from ..commit_health import FIRST_RETRY_S, LAST_RETRY_S, CommitHealth, Retry, ignore_unretrieved
from ..errors import StorageUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = ["WriteBehind"]

T = TypeVar("T")


class WriteBehind(CommitHealth, Generic[T]):
    """A write-behind buffer of ``T`` operations committed by ``commit`` in batches.

    Args:
        commit: writes one batch in one transaction; raises on failure.
        linger_s: how long the flusher waits for more operations after the
            first arrives when the buffer is small (0 commits at once).
        max_batch: a batch this large is committed without lingering.
        permanent: whether a commit error is one that retrying can't fix.
        settle_linger_s: how long a batch of ``lazy`` operations only waits
            for an urgent one (0 commits at once).
        lazy: whether an operation may wait (``None``: none may).
        settle_max: how many ``lazy`` operations stop waiting for an urgent
            one (default ``max_batch``).
    """

    def __init__(
        self,
        commit: Callable[[list[T]], Awaitable[None]],
        *,
        linger_s: float = 0.0,
        max_batch: int = 512,
        permanent: Callable[[Exception], bool] | None = None,
        settle_linger_s: float = 0.0,
        lazy: Callable[[T], bool] | None = None,
        settle_max: int | None = None,
    ) -> None:
        super().__init__(permanent)
        self._commit = commit
        self.linger_s = linger_s
        self.max_batch = max_batch
        self.settle_linger_s = settle_linger_s if lazy is not None else 0.0
        self._lazy = lazy
        self.settle_max = max_batch if settle_max is None else settle_max
        self._urgent: asyncio.Event | None = None
        self._buffer: list[T] = []
        self._future: asyncio.Future[None] | None = None
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the flusher task."""
        self._kick = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="write-behind")

    def write(self, ops: Sequence[T]) -> asyncio.Future[None]:
        """Append ``ops`` to the open batch and return that batch's commit future."""
        if not ops:
            # Nothing joins a batch: answer the latest one (the flusher skips empty buffers),
            # committed now.
            self._hurry()
            latest = self._future or self._inflight
            if latest is None:
                latest = asyncio.get_running_loop().create_future()
                latest.set_result(None)
            return latest
        future = self._future
        if future is None:
            future = self._future = asyncio.get_running_loop().create_future()
            # Nobody may await it (casts, acks): don't warn about unretrieved errors.
            future.add_done_callback(ignore_unretrieved)
        self._buffer.extend(ops)
        assert self._kick is not None and self._urgent is not None, "start() first"
        lazy = self._lazy
        if not self._urgent.is_set() and (
            lazy is None or len(self._buffer) >= self.settle_max or not all(map(lazy, ops))
        ):
            self._urgent.set()
        self._kick.set()
        return future

    def _hurry(self) -> None:
        """Let lingering settlements commit now."""
        if self._buffer and self._urgent is not None:
            self._urgent.set()

    async def flush(self) -> None:
        """Wait until every operation written so far has committed (or failed)."""
        self._hurry()
        for future in (self._future, self._inflight):
            if future is not None:
                with suppress(StorageUnavailable):
                    await asyncio.shield(future)

    async def close(self, grace_s: float = 10.0) -> None:
        """Commit what is buffered, then stop the flusher.

        While storage is degraded the buffer may never commit: after
        ``grace_s`` seconds the rest is given up (publishes were refused
        meanwhile, so what is lost are settlements, redelivered later).
        """
        self._closing = True
        try:
            await asyncio.wait_for(self.flush(), grace_s)
        except TimeoutError:
            logger.error(
                "storage close gave up on unflushed operations",
                count=len(self._buffer),
                reason=self.degraded,
            )
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def stop(self) -> None:
        """Stop the flusher without committing: what is buffered is dropped, as in a crash.

        The futures of the dropped operations fail with `StorageUnavailable`.
        """
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        self._buffer = []
        for future in (self._future, self._inflight):
            if future is not None and not future.done():
                future.set_exception(StorageUnavailable("storage is closed"))
        self._future = self._inflight = None

    @property
    def running(self) -> bool:
        """Whether the flusher task runs (from `start` to `close` or `stop`)."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        kick, urgent = self._kick, self._urgent
        assert kick is not None and urgent is not None, "start() first"
        while True:
            await kick.wait()
            kick.clear()
            if not self._buffer:
                continue
            if self.settle_linger_s and not urgent.is_set() and not self._closing:
                # Settlements only: wait for a publish (or the deadline).
                with suppress(TimeoutError):
                    await asyncio.wait_for(urgent.wait(), self.settle_linger_s)
            if self.linger_s and len(self._buffer) < self.max_batch and not self._closing:
                await asyncio.sleep(self.linger_s)
            ops, self._buffer = self._buffer, []
            urgent.clear()
            future, self._future = self._future, None
            assert future is not None, "a non-empty buffer has a future"
            self._inflight = future
            await self._commit_until_done(ops, future)
            self._inflight = None

    async def _commit_until_done(self, ops: list[T], future: asyncio.Future[None]) -> None:
        delay = FIRST_RETRY_S
        loop = asyncio.get_running_loop()
        ops = self._screen(ops)
        first = True
        while ops:
            started = loop.time()
            try:
                await self._commit(ops)
            except Exception as exc:
                error, ops, retry = self._failed(exc, ops, first)
                first = False
                if not future.done():
                    future.set_exception(error)
                if retry is Retry.LATER:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, LAST_RETRY_S)
                continue
            self._committed(len(ops), loop.time() - started)
            break
        if not future.done():
            future.set_result(None)

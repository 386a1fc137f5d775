"""`SQLiteWriter`: the one thread that writes the SQLite database, committing batches it pulls.

Group commit, as `storage.postgres.writer` does it for PostgreSQL, but with the
committing loop in the writer's own thread rather than in an asyncio task:
the event loop appends operations to the open batch and returns; the thread
takes everything buffered, writes it in one transaction, resolves the
batch's future through ``call_soon_threadsafe`` and takes the next batch at
once. The commit loop never waits for a turn of the event loop, so the disk
is kept busy while the loop is busy with frames: the same two cores commit
more than when each statement of a transaction was one hop between the loop
and a worker thread (``python -m benchmarks.bench_ws``, figures in the
README).

Between batches the thread runs one-off calls (`SQLiteWriter.call`): the
schema, recovery, user and token writes, pruning. Every write to the
database goes through this thread and its one connection, so two
transactions never interleave and none waits on SQLite's file lock. Reads
go through another connection (WAL lets them run beside a commit).

Settlements (deliveries, acks, nacks, releases) wait for company
(``settle_linger_s``): nobody awaits their commit (an ack is answered once
the queue's state changed, and losing it in a crash only redelivers its
message, marked redelivered), so they commit with the next publish, or
once they have waited that long. At low rates this halves the commits, and
the pages each commit rewrites (`storage.sqlite.store`, the README's "Disk
writes"). Any other operation, an empty write (a confirm waiting for what
is buffered) and `SQLiteWriter.flush` commit at once.

When a commit fails, the batch's future fails (its publishers get 503) and
its publishes are withdrawn for good; the rest is retried with backoff
while the writer is `degraded` (publishes are refused up front), or given
up after an error retrying can't fix (`storage.commit_health`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from broker_core.journal import AckOp, DeliverOp, Fail, Release, Requeue

from ..commit_health import FIRST_RETRY_S, LAST_RETRY_S, CommitHealth, Retry, ignore_unretrieved
from ..errors import StorageUnavailable

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Sequence

    from broker_core.journal import Op

__all__ = ["SETTLES", "SQLiteWriter"]

SETTLES: frozenset[type] = frozenset({DeliverOp, AckOp, Fail, Requeue, Release})
"""Operations that may wait (``settle_linger_s``): losing them in a crash redelivers a message."""

R = TypeVar("R")
Call = tuple["asyncio.Future[Any]", "Callable[[sqlite3.Connection], Any]"]
"""A one-off job: its future and the function to run on the writer's connection."""


class SQLiteWriter(CommitHealth):
    """A writer thread with its own SQLite connection.

    Args:
        connect: opens the connection (called in the writer thread).
        commit: writes one batch in one transaction on that connection;
            raises on failure (the transaction rolled back). Looked up on
            each batch, so a test may wrap it to inject a fault.
        linger_s: how long a small batch waits for company (0 commits at once).
        settle_linger_s: how long a batch of settlements only (`SETTLES`)
            waits for an operation that commits at once (0: they don't wait).
        max_batch: a batch this large is committed without lingering.
        permanent: whether a commit error is one that retrying can't fix.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        commit: Callable[[sqlite3.Connection, list[Op]], None],
        *,
        linger_s: float = 0.0,
        settle_linger_s: float = 0.0,
        max_batch: int = 512,
        permanent: Callable[[Exception], bool] | None = None,
    ) -> None:
        super().__init__(permanent)
        self.commit = commit
        self.linger_s = linger_s
        self.settle_linger_s = settle_linger_s
        self.max_batch = max_batch
        self._connect = connect
        self._cond = threading.Condition(threading.Lock())
        self._buffer: list[Op] = []
        self._future: asyncio.Future[None] | None = None
        self._inflight: asyncio.Future[None] | None = None
        self._calls: deque[Call] = deque()
        self._idle = False
        self._urgent = False
        self._settles_since = 0.0
        self._lingering = False
        self._draining = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None

    # -- the event loop's side ---------------------------------------------------

    async def start(self) -> None:
        """Start the thread and open its connection.

        Raises:
            sqlite3.Error: the connection could not be opened (the thread has stopped).
        """
        loop = self._loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        opened: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, args=(opened,), name="sqlite-writer", daemon=True
        )
        self._thread.start()
        await opened

    def write(self, ops: Sequence[Op]) -> asyncio.Future[None]:
        """Append ``ops`` to the open batch and return that batch's commit future."""
        loop = self._loop
        assert loop is not None, "start() first"
        with self._cond:
            if self._stopping:
                stopped = loop.create_future()
                stopped.set_exception(StorageUnavailable("storage is closed"))
                stopped.add_done_callback(ignore_unretrieved)
                return stopped
            if not ops:
                # Nothing joins a batch: answer the latest one, committed now.
                self._hurry()
                latest = self._future or self._inflight
                if latest is None:
                    latest = loop.create_future()
                    latest.set_result(None)
                return latest
            future = self._future
            if future is None:
                future = self._future = loop.create_future()
                # Nobody may await it (casts, acks): don't warn about unretrieved errors.
                future.add_done_callback(ignore_unretrieved)
            started = not self._buffer
            if started:
                self._settles_since = time.monotonic()
            self._buffer.extend(ops)
            if not self._urgent and any(type(op) not in SETTLES for op in ops):
                self._urgent = True
            full = len(self._buffer) >= self.max_batch
            # A settlement joining lingering ones needs no wake-up: the thread has its deadline.
            if (self._idle and (started or full or self._urgent)) or (self._lingering and full):
                # One wake-up is enough: what is written before the thread runs joins the batch.
                self._idle = self._lingering = False
                self._cond.notify()
        return future

    async def call(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``fn(connection)`` in the writer thread, between two batches; return its result.

        Raises:
            StorageUnavailable: the writer has stopped.
            Exception: whatever ``fn`` raised.
        """
        loop = self._loop
        assert loop is not None, "start() first"
        future: asyncio.Future[R] = loop.create_future()
        with self._cond:
            if self._stopping:
                raise StorageUnavailable("storage is closed")
            self._calls.append((future, fn))
            self._cond.notify()
        return await future

    def _hurry(self) -> None:
        """Let lingering settlements commit now (under the lock)."""
        if self._buffer and not self._urgent:
            self._urgent = True
            self._cond.notify()

    async def flush(self) -> None:
        """Wait until every operation written so far has committed (or failed)."""
        with self._cond:
            self._hurry()
            futures = (self._future, self._inflight)
        for future in futures:
            if future is not None:
                with suppress(StorageUnavailable):
                    await asyncio.shield(future)

    async def drain(self, grace_s: float = 10.0) -> None:
        """Wait up to ``grace_s`` seconds for what is buffered to commit (before `stop`).

        While storage is degraded the buffer may never commit: what is left
        after the grace is given up at `stop` (publishes were refused
        meanwhile, so what is lost are settlements, redelivered later).
        """
        with self._cond:
            self._draining = True
            self._cond.notify()
        try:
            await asyncio.wait_for(self.flush(), grace_s)
        except TimeoutError:
            with self._cond:
                count = len(self._buffer)
            logger.error(
                "storage close gave up on unflushed operations", count=count, reason=self.degraded
            )

    async def stop(self) -> None:
        """Stop the thread and close its connection; operations still buffered are dropped.

        The batch committing now finishes first; the futures of what is
        dropped fail with `StorageUnavailable`. Without a `drain` before,
        this leaves the database as a crash would.
        """
        if self._thread is None or self._stopped is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify()
        await asyncio.shield(self._stopped)
        self._thread.join()

    # -- the writer thread --------------------------------------------------------

    def _main(self, opened: asyncio.Future[None]) -> None:
        try:
            connection = self._connect()
        except BaseException as exc:
            with self._cond:
                self._stopping = True
            self._resolve(opened, exc)
            self._resolve(self._stopped, None)
            return
        self._resolve(opened, None)
        try:
            while (job := self._next()) is not None:
                if isinstance(job, tuple):
                    self._run_call(connection, job)
                else:
                    self._commit_until_done(connection, job)
        finally:
            with self._cond:
                self._stopping = True
                calls, self._calls = list(self._calls), deque()
                dropped, self._future = self._future, None
                self._buffer = []
            # Nothing may wait forever on a write or a call the writer will never run.
            closed = StorageUnavailable("storage is closed")
            self._resolve(dropped, closed)
            for call, _ in calls:
                self._resolve(call, closed)
            connection.close()
            self._resolve(self._stopped, None)

    def _next(self) -> Call | list[Op] | None:
        """The next job: a call, a batch (with its future now in flight), or ``None`` to stop."""
        cond = self._cond
        with cond:
            while True:
                if self._calls:
                    return self._calls.popleft()
                if self._stopping:
                    return None
                if self._buffer:
                    if self._urgent or self._draining or len(self._buffer) >= self.max_batch:
                        break
                    remaining = self._settles_since + self.settle_linger_s - time.monotonic()
                    if remaining <= 0:
                        break
                    # Settlements only: wait for a publish (or the deadline).
                    self._idle = True
                    cond.wait(remaining)
                    self._idle = False
                    continue
                self._idle = True
                cond.wait()
                self._idle = False
            if self.linger_s and not self._draining:
                deadline = time.monotonic() + self.linger_s
                self._lingering = True
                while len(self._buffer) < self.max_batch and not (self._stopping or self._draining):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    cond.wait(remaining)
                self._lingering = False
                if self._stopped_meanwhile():
                    return None
            ops, self._buffer = self._buffer, []
            self._urgent = False
            self._inflight, self._future = self._future, None
            return ops

    def _run_call(self, connection: sqlite3.Connection, call: Call) -> None:
        future, fn = call
        try:
            result = fn(connection)
        except BaseException as exc:
            self._resolve(future, exc)
        else:
            self._resolve(future, None, result)

    def _wait_to_retry(self, connection: sqlite3.Connection, delay: float) -> bool:
        """Sleep ``delay`` before retrying a failed batch, running calls meanwhile.

        Calls are transactions of their own (the failed batch rolled back):
        one may be what makes the retry succeed. Returns whether to retry
        (not when the writer stops).
        """
        deadline = time.monotonic() + delay
        while True:
            with self._cond:
                if self._stopping:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                if not self._calls:
                    self._cond.wait(remaining)
                    continue
                call = self._calls.popleft()
            self._run_call(connection, call)

    def _stopped_meanwhile(self) -> bool:
        # A method, not the attribute: the flag changes while the thread waits.
        return self._stopping

    def _commit_until_done(self, connection: sqlite3.Connection, ops: list[Op]) -> None:
        future = self._inflight
        assert future is not None, "a batch has a future"
        delay = FIRST_RETRY_S
        ops = self._screen(ops)
        first = True
        while ops:
            started = time.perf_counter()
            try:
                self.commit(connection, ops)
            except Exception as exc:
                error, ops, retry = self._failed(exc, ops, first)
                first = False
                self._resolve(future, error)
                if retry is Retry.LATER:
                    if not self._wait_to_retry(connection, delay):
                        break
                    delay = min(delay * 2, LAST_RETRY_S)
                continue
            self._committed(len(ops), time.perf_counter() - started)
            break
        # After a failure this changes nothing: the error was settled first.
        self._resolve(future, None)
        with self._cond:
            self._inflight = None

    def _resolve(
        self, future: asyncio.Future[Any] | None, error: BaseException | None, result: Any = None
    ) -> None:
        loop = self._loop
        if future is None or loop is None:
            return
        # The loop may be gone when a crash-like stop abandons the writer.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, error, result)


def _settle(future: asyncio.Future[Any], error: BaseException | None, result: Any) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)

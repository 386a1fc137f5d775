"""Tests of `WriteBehind`, the group-commit buffer, with a fake commit function."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, Any

import pytest

from broker_core.errors import Unavailable
from storage import StorageUnavailable, WriteBehind

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

MS = 0.001


class FakeCommit:
    """Records each batch; can hold commits behind a gate and fail the next N attempts."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.attempts = 0
        self.failures_left = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def __call__(self, ops: list[int]) -> None:
        self.attempts += 1
        self.entered.set()
        await self.gate.wait()
        if self.failures_left:
            self.failures_left -= 1
            raise OSError("disk full")
        self.batches.append(list(ops))


@pytest.fixture
def commit() -> FakeCommit:
    return FakeCommit()


@pytest.fixture
async def buffer(commit: FakeCommit) -> AsyncIterator[WriteBehind[int]]:
    buffer: WriteBehind[int] = WriteBehind(commit)
    buffer.start()
    yield buffer
    commit.gate.set()
    commit.failures_left = 0
    await buffer.close()


async def test_write_resolves_after_commit(buffer: WriteBehind[int], commit: FakeCommit) -> None:
    """A write's future is done once its batch committed."""
    future = buffer.write([1, 2])
    assert not future.done()
    await future
    assert commit.batches == [[1, 2]]
    assert (buffer.stats.batches, buffer.stats.ops) == (1, 2)


async def test_writes_during_a_commit_join_one_batch(
    buffer: WriteBehind[int], commit: FakeCommit
) -> None:
    """Everything written while a commit is in progress lands in the next single batch."""
    commit.gate.clear()
    first = buffer.write([0])
    await commit.entered.wait()
    later = [buffer.write([i]) for i in range(1, 11)]
    assert all(f is later[0] for f in later)
    assert later[0] is not first
    commit.gate.set()
    await asyncio.gather(first, *later)
    assert commit.batches == [[0], list(range(1, 11))]


async def test_linger_gathers_a_burst(commit: FakeCommit) -> None:
    """With linger_s, writes that arrive together commit in one batch."""
    buffer: WriteBehind[int] = WriteBehind(commit, linger_s=20 * MS)
    buffer.start()
    futures = [buffer.write([i]) for i in range(5)]
    await asyncio.sleep(0)
    futures.append(buffer.write([5]))
    await asyncio.gather(*futures)
    assert commit.batches == [[0, 1, 2, 3, 4, 5]]
    await buffer.close()


async def test_failed_commit_fails_the_batch_and_degrades(
    buffer: WriteBehind[int], commit: FakeCommit
) -> None:
    """A failing commit fails the batch's future with StorageUnavailable and sets degraded."""
    commit.failures_left = 1
    future = buffer.write([1])
    with pytest.raises(StorageUnavailable) as caught:
        await future
    assert isinstance(caught.value, Unavailable)
    assert "disk full" in str(caught.value)
    assert buffer.degraded is not None
    assert "disk full" in buffer.degraded
    assert (buffer.stats.failures, buffer.stats.last_error) == (1, "OSError: disk full")


async def test_failed_batch_is_retried_until_it_commits(
    buffer: WriteBehind[int], commit: FakeCommit
) -> None:
    """The failed batch is retried, recovers, and later batches follow in order."""
    commit.failures_left = 2
    failed = buffer.write([1])
    with pytest.raises(StorageUnavailable):
        await failed
    later = buffer.write([2])
    await later
    assert commit.batches == [[1], [2]]
    assert commit.attempts == 4
    assert buffer.degraded is None


async def test_flush_waits_for_everything_written(
    buffer: WriteBehind[int], commit: FakeCommit
) -> None:
    """flush returns only once the in-flight and the open batch committed."""
    commit.gate.clear()
    _ = buffer.write([1])
    await commit.entered.wait()
    _ = buffer.write([2])
    flushing = asyncio.ensure_future(buffer.flush())
    await asyncio.sleep(5 * MS)
    assert not flushing.done()
    commit.gate.set()
    await flushing
    assert commit.batches == [[1], [2]]


async def test_flush_with_nothing_written_returns(buffer: WriteBehind[int]) -> None:
    """flush on an idle buffer returns at once."""
    async with asyncio.timeout(1):
        await buffer.flush()


async def test_flush_does_not_raise_on_a_failed_batch(
    buffer: WriteBehind[int], commit: FakeCommit
) -> None:
    """flush reports nothing: a failed batch is the writers' error, not the flusher's."""
    commit.failures_left = 1
    _ = buffer.write([1])
    await buffer.flush()
    assert commit.attempts >= 1


async def test_write_of_nothing_resolves(buffer: WriteBehind[int], commit: FakeCommit) -> None:
    """An empty write doesn't leave a future that never resolves."""
    async with asyncio.timeout(1):
        await buffer.write([])
        await buffer.flush()
    assert commit.batches == []


async def test_unawaited_failed_batch_is_not_reported(
    buffer: WriteBehind[int], commit: FakeCommit
) -> None:
    """A failed batch that nobody awaited doesn't log 'exception never retrieved'."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        commit.failures_left = 1
        _ = buffer.write([1])
        await commit.entered.wait()
        await buffer.write([2])
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert reported == []


async def test_close_commits_what_is_buffered(commit: FakeCommit) -> None:
    """close() commits the open batch, then stops the flusher task."""
    buffer: WriteBehind[int] = WriteBehind(commit, linger_s=1.0)
    buffer.start()
    future = buffer.write([1, 2, 3])
    await buffer.close()
    assert future.done()
    assert commit.batches == [[1, 2, 3]]
    assert not buffer.running


async def test_stop_drops_what_is_buffered(commit: FakeCommit) -> None:
    """stop() commits nothing more: buffered and in-flight writes fail, the flusher ends."""
    buffer: WriteBehind[int] = WriteBehind(commit)
    buffer.start()
    commit.gate.clear()
    inflight = buffer.write([1])
    await commit.entered.wait()
    buffered = buffer.write([2])
    await buffer.stop()
    for future in (inflight, buffered):
        with pytest.raises(StorageUnavailable):
            await future
    assert commit.batches == []
    assert not buffer.running


async def test_large_batch_skips_linger(commit: FakeCommit) -> None:
    """A batch of max_batch operations commits without waiting for the linger."""
    buffer: WriteBehind[int] = WriteBehind(commit, linger_s=10.0, max_batch=3)
    buffer.start()
    async with asyncio.timeout(1):
        await buffer.write([1, 2, 3])
    await buffer.close()


async def test_a_batch_failing_for_good_is_given_up_and_later_ones_commit(
    commit: FakeCommit,
) -> None:
    """An error retrying can't fix fails the batch once, without retries or degrading."""
    buffer: WriteBehind[int] = WriteBehind(commit, permanent=lambda exc: True)
    buffer.start()
    commit.failures_left = 1
    with pytest.raises(StorageUnavailable):
        await buffer.write([1])
    await buffer.write([2])
    assert commit.batches == [[2]]
    assert commit.attempts == 2
    assert buffer.degraded is None
    await buffer.close()


async def test_settlements_wait_for_a_publish_or_a_flush(commit: FakeCommit) -> None:
    """Lazy operations alone wait (here longer than the test): an urgent one takes them
    along; a flush, an empty write or a close commits them at once."""
    buffer: WriteBehind[int] = WriteBehind(commit, settle_linger_s=600, lazy=lambda op: op < 0)
    buffer.start()
    try:
        acks = buffer.write([-1, -2])
        for _ in range(20):
            await asyncio.sleep(0)
        assert not acks.done() and commit.batches == []
        await buffer.write([1])
        assert acks.done()
        assert commit.batches == [[-1, -2, 1]]
        lingering = buffer.write([-3])
        await buffer.flush()
        assert lingering.done()
        lingering = buffer.write([-4])
        await buffer.write([])
        assert lingering.done()
        lingering = buffer.write([-5])
    finally:
        await buffer.close()
    assert commit.batches == [[-1, -2, 1], [-3], [-4], [-5]]


async def test_settlements_alone_commit_after_their_linger(commit: FakeCommit) -> None:
    """With no publish coming, lazy operations commit once they have waited."""
    buffer: WriteBehind[int] = WriteBehind(commit, settle_linger_s=5 * MS, lazy=lambda op: op < 0)
    buffer.start()
    try:
        await buffer.write([-1])
        assert commit.batches == [[-1]]
    finally:
        await buffer.close()


async def test_settlements_commit_without_waiting_once_enough_wait(commit: FakeCommit) -> None:
    """``settle_max`` lazy operations commit at once, with no publish and before the linger."""
    buffer: WriteBehind[int] = WriteBehind(
        commit, settle_linger_s=600, lazy=lambda op: op < 0, settle_max=3
    )
    buffer.start()
    try:
        waiting = buffer.write([-1, -2])
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiting.done()
        await asyncio.wait_for(buffer.write([-3]), 5)
        assert waiting.done()
        assert commit.batches == [[-1, -2, -3]]
    finally:
        await buffer.close()

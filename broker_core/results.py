"""Ack results and their waiters, and the recording of message histories.

`Results` sits on the broker's ``history`` and ``ops_written`` hooks (every
batch of journal operations a queue writes passes there): it makes the
batch's history lines (`history.record`), which join the batch itself, and wakes whoever
awaits the outcome of a message that batch settled, once it committed. A
waiter is an `asyncio.Future` per awaited message id: no polling on one
node. On shared storage, an ack on another node is seen through a periodic
re-read (``_SHARED_RECHECK_S``), see the README.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from .history import HistoryEntry, SetResult, decode, record
from .history_codec import delivered_fragment
from .journal import AckOp, DeadLetter, Drop, Fail, StoredMessage
from .types import MessageStatus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .broker import Broker
    from .journal import Op
    from .messages import SettleResult
    from .queue import SettleOutcome

__all__ = ["FINAL_STATUSES", "Results"]

FINAL_STATUSES = frozenset({MessageStatus.PROCESSED, MessageStatus.FAILED, MessageStatus.ENDED})
"""The statuses a result waiter waits for."""
_SHARED_RECHECK_S = 1.0
"""On shared storage, how often a waiter re-reads the message (acks on other nodes)."""
_ENDS = (AckOp, Fail, DeadLetter, Drop)
_Settled = TypeVar("_Settled", "SettleOutcome", "SettleResult")


class Results:
    """Ack results, their waiters and history recording of one broker.

    ``recording`` turns history recording on or off (``BROKER_HISTORY``);
    ``max_bytes`` is the largest result an ack may carry.
    """

    def __init__(self, broker: Broker, *, history: bool = True, max_bytes: int = 64 << 10) -> None:
        self._broker = broker
        self.recording = history
        self.max_bytes = max_bytes
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._carrying: set[int] = set()

    # -- the hot path -----------------------------------------------------------

    def record(self, queue: str, ops: Sequence[Op], now: float) -> Op | None:
        """The history lines of ``ops`` (of ``queue``, made at ``now``) as one operation."""
        if not self.recording:
            return None
        return record(ops, now, self._delivered_of(queue))

    def ops_written(self, queue: str, ops: Sequence[Op]) -> None:
        """Wake the waiters of messages that ``ops`` settled, once they committed."""
        broker = self._broker
        waiters = self._waiters
        if waiters:
            ended = [
                op.id
                for op in ops
                if isinstance(op, _ENDS) and op.id in waiters and op.id not in self._carrying
            ]
            if ended:
                commit = broker.storage.write([])
                commit.add_done_callback(lambda _: self._wake(ended))

    def _delivered_of(self, queue: str) -> Callable[[int], str]:
        """The fields of a push delivery to a consumer of ``queue``, by consumer id."""
        actor = self._broker.find_actor(queue)

        def fields(consumer_id: int) -> str:
            consumer = None if actor is None else actor.state.consumers.get(consumer_id)
            return delivered_fragment(consumer_id, "" if consumer is None else consumer.label)

        return fields

    def wake(self, ids: Sequence[int]) -> None:
        """Wake the waiters of ``ids`` (their outcome committed, here or on another node)."""
        self._wake(ids)

    def _wake(self, ids: Sequence[int]) -> None:
        for id in ids:
            for future in self._waiters.pop(id, ()):
                if not future.done():
                    future.set_result(None)

    # -- acks with a result -------------------------------------------------------

    async def ack(
        self,
        ids: Sequence[int],
        result: bytes | None,
        allowed: Callable[[str], bool] | None = None,
    ) -> SettleResult:
        """Ack messages by id, keeping ``result`` (JSON) with each one acked.

        The hook a webhook consumer calls with a 2xx body. Waiters wake once
        the result committed, so they always read it.
        """
        return await self.settle_with(ids, result, partial(self._broker.ack, ids, allowed=allowed))

    async def settle_with(
        self,
        ids: Sequence[int],
        result: bytes | None,
        settle: Callable[[], Awaitable[_Settled]],
    ) -> _Settled:
        """Ack ``ids`` with ``settle`` (any ack path: by id, a consumer's) and keep ``result``."""
        broker = self._broker
        if result is None:
            return await settle()
        carrying = self._carrying
        fresh = [id for id in ids if id not in carrying]
        carrying.update(fresh)
        try:
            outcome = await settle()
            if outcome.settled:
                ops: list[Op] = [SetResult(id, result) for id in outcome.settled]
                await broker.storage.write(ops)
        finally:
            carrying.difference_update(fresh)
        self._wake(outcome.settled)
        return outcome

    # -- reading ----------------------------------------------------------------

    async def wait(self, id: int, seconds: float) -> StoredMessage | None:
        """The message once processed or failed, waiting up to ``seconds``; else ``None``.

        Returns ``None`` also when the message doesn't exist (any more).
        """
        storage = self._broker.storage
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(id, []).append(future)
            try:
                stored = await storage.get_message(id)
                if stored is None or stored.status in FINAL_STATUSES:
                    return stored
                left = deadline - loop.time()
                if left <= 0:
                    return None
                if storage.shared:
                    left = min(left, _SHARED_RECHECK_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, left)
            finally:
                futures = self._waiters.get(id)
                if futures is not None and future in futures:
                    futures.remove(future)
                    if not futures:
                        del self._waiters[id]

    async def result(self, id: int) -> bytes | None:
        """The result stored with message ``id``."""
        return await self._broker.storage.result(id)

    async def history(self, id: int) -> list[HistoryEntry]:
        """The history events of message ``id``, in order."""
        stored = await self._broker.storage.history(id)
        return [] if stored is None else decode(stored[1], stored[0])

"""`InFlight`: which queue holds each leased message, and settling or touching them by id.

``POST /messages/{id}/ack`` names no queue: the index, kept from the
journal operations every actor writes (`record`), finds the actor to ask.
A message no actor here holds may be another node's (`cluster.Cluster`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cluster import give_back_op
from .errors import InvalidTransition, MessageNotFound
from .journal import AckOp, DeadLetter, DeliverOp, Drop, Fail, Requeue
from .messages import SettleResult

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from .broker import Broker
    from .cluster import Standalone
    from .journal import Op, StoredMessage
    from .messages import QueueOptions
    from .queue import QueueState, SettleOutcome

__all__ = ["InFlight"]

_SETTLED = (AckOp, Requeue, Fail, DeadLetter, Drop)


class InFlight:
    """The index of leased messages by id, and the by-id ack, nack and touch it serves.

    Args:
        broker: whose actors hold the messages.
        node: how the broker stands toward storage (messages held elsewhere).
    """

    def __init__(self, broker: Broker, node: Standalone) -> None:
        self._broker = broker
        self._node = node
        self._queues: dict[int, str] = {}

    def record(self, queue: str, ops: Sequence[Op]) -> None:
        """Index the deliveries of ``queue``'s journal operations, forget the settled ones."""
        queues = self._queues
        for op in ops:
            if type(op) is DeliverOp:
                queues[op.id] = queue
            elif type(op) in _SETTLED:
                queues.pop(op.id, None)  # type: ignore[union-attr]

    def forget(self, ids: Iterable[int]) -> None:
        """The messages ``ids`` are no longer in flight (their queue was deleted)."""
        for id in ids:
            self._queues.pop(id, None)

    def queue_of(self, message_id: int) -> str | None:
        """The queue of an in-flight (processing) message, else ``None``."""
        return self._queues.get(message_id)

    async def ack(self, ids: Sequence[int], allowed: Callable[[str], bool] | None) -> SettleResult:
        """Ack in-flight messages by id (any queue); ``allowed`` filters by queue name."""
        return await self._settle(
            ids,
            allowed,
            lambda state, group, now: state.ack(group, now),
            lambda held, _, now: AckOp(
                held.queue,
                held.entry.id,
                now,
                held.entry.group is not None,
                held.entry.created_at,
            ),
        )

    async def nack(
        self,
        ids: Sequence[int],
        requeue: bool,
        reason: str | None,
        allowed: Callable[[str], bool] | None,
        delay_ms: int | None = None,
    ) -> SettleResult:
        """Nack in-flight messages by id: requeue them (after ``delay_ms``, else the queue's
        back-off) or dead-letter them."""
        return await self._settle(
            ids,
            allowed,
            lambda state, group, now: state.nack(
                group, now, requeue=requeue, reason=reason, delay_ms=delay_ms
            ),
            lambda held, options, now: give_back_op(
                held.queue, options, held.entry, requeue, reason or "rejected", now, delay_ms
            ),
        )

    async def _settle(
        self,
        ids: Sequence[int],
        allowed: Callable[[str], bool] | None,
        settle: Callable[[QueueState, list[int], float], SettleOutcome],
        foreign: Callable[[StoredMessage, QueueOptions, float], Op],
    ) -> SettleResult:
        groups: dict[str, list[int]] = {}
        errors: dict[str, str] = {}
        elsewhere: list[int] = []
        for id in dict.fromkeys(ids):
            queue = self._queues.get(id)
            if queue is None and self._node.held_elsewhere(id):
                elsewhere.append(id)
                continue
            if queue is None or (allowed is not None and not allowed(queue)):
                errors[str(id)] = str(InvalidTransition(id, "settle", "not processing"))
                continue
            groups.setdefault(queue, []).append(id)
        settled: list[int] = []
        if elsewhere:
            settled.extend(await self._node.settle_elsewhere(elsewhere, allowed, foreign, errors))
        for queue, group in groups.items():
            actor = self._broker.find_actor(queue)
            if actor is None:
                errors.update({str(id): str(MessageNotFound(id)) for id in group})
                continue
            outcome = await actor.call(lambda state, now, g=group: settle(state, g, now))  # type: ignore[misc]
            settled.extend(outcome.settled)
            errors.update({str(id): str(exc) for id, exc in outcome.errors.items()})
        return SettleResult(settled=settled, errors=errors)

    async def touch(self, id: int, lease: float, allowed: Callable[[str], bool] | None) -> float:
        """Extend the lease of an in-flight message; return the new deadline.

        On shared storage a message another node holds is extended there:
        storage records the deadline and tells that node.
        """
        queue = self._queues.get(id)
        if queue is None and self._node.held_elsewhere(id):
            deadline = await self._node.touch_elsewhere(id, lease, allowed)
            if deadline is not None:
                return deadline
        if queue is None or (allowed is not None and not allowed(queue)):
            raise InvalidTransition(id, "touch", "not processing")
        return await self._broker.actor(queue).call(lambda state, now: state.touch(id, lease, now))

"""`EventHub`: the events (`QueueEvent`) a broker tells its listeners (dashboards, GraphQL).

Journal operations become events (`event_of`): one per published,
delivered, acked, nacked, failed, dead-lettered or dropped message, plus
the queue lifecycle events the `Broker` emits itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from loguru import logger

from .journal import AckOp, DeadLetter, DeliverOp, Drop, Fail, Insert, Requeue
from .messages import QueueEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .journal import Op

__all__ = ["EventHub", "EventListener", "event_of"]

EventListener: TypeAlias = "Callable[[QueueEvent], None]"
"""A function called with every `QueueEvent`; it must not block."""


class EventHub:
    """The listeners of a broker's events."""

    def __init__(self) -> None:
        self._listeners: set[EventListener] = set()

    def add(self, listener: EventListener) -> None:
        """Call ``listener`` for every `QueueEvent` (it must not block)."""
        self._listeners.add(listener)

    def remove(self, listener: EventListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.discard(listener)

    def emit(self, event: QueueEvent) -> None:
        """Call every listener with ``event``."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # pragma: no cover - listeners are ours
                logger.opt(exception=exc).error("event listener failed")

    def ops(self, queue: str, ops: Sequence[Op], clock: Callable[[], float]) -> None:
        """Emit the events of ``queue``'s journal operations (nothing without listeners)."""
        if not self._listeners:
            return
        now = clock()
        for op in ops:
            event = event_of(queue, op, now)
            if event is not None:
                self.emit(event)


def event_of(queue: str, op: Op, now: float) -> QueueEvent | None:
    """The event a journal operation of ``queue`` makes, or ``None``."""
    match op:
        case Insert(entry=entry):
            return QueueEvent(type="published", queue=queue, at=now, message_id=entry.id)
        case DeliverOp(id=id):
            return QueueEvent(type="delivered", queue=queue, at=now, message_id=id)
        case AckOp(id=id):
            return QueueEvent(type="acked", queue=queue, at=now, message_id=id)
        case Requeue(id=id):
            return QueueEvent(type="nacked", queue=queue, at=now, message_id=id)
        case Fail(id=id, reason=reason):
            return QueueEvent(type="failed", queue=queue, at=now, message_id=id, detail=reason)
        case DeadLetter(id=id, target=target, reason=reason):
            return QueueEvent(
                type="dead_lettered",
                queue=queue,
                at=now,
                message_id=id,
                detail=f"{reason} -> {target}",
            )
        case Drop(id=id):
            return QueueEvent(type="dropped", queue=queue, at=now, message_id=id)
        case _:
            return None

"""Helpers shared by the core tests: journal op summaries and a recording delivery sink."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from broker_core.journal import (
    AckOp,
    DeadLetter,
    DeliverOp,
    Drop,
    Fail,
    Insert,
    PurgeQueue,
    Release,
    Requeue,
    Reschedule,
)
from tests.conftest import MS

if TYPE_CHECKING:
    from broker_core.journal import Op
    from broker_core.messages import Entry

__all__ = ["Sink", "describe"]


def describe(op: Op) -> tuple[Any, ...]:
    """A comparable summary of a journal operation."""
    match op:
        case Insert(entry=entry):
            return ("insert", entry.id)
        case DeliverOp(id=id, attempt=attempt):
            return ("deliver", id, attempt)
        case Requeue(id=id, attempt=attempt, deliver_at=at):
            return ("requeue", id, attempt) if not at else ("requeue", id, attempt, at)
        case Reschedule(id=id, deliver_at=at, priority=priority):
            return ("reschedule", id, at, priority)
        case AckOp(id=id):
            return ("ack", id)
        case Fail(id=id, reason=reason):
            return ("fail", id, reason)
        case DeadLetter(id=id, target=target, reason=reason):
            return ("dead_letter", id, target, reason)
        case Drop(id=id):
            return ("drop", id)
        case Release(id=id):
            return ("release", id)
        case PurgeQueue():
            return ("purge",)
        case _:
            return (type(op).__name__,)


class Sink:
    """A push consumer's sink that records deliveries and lets a test wait for them."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self._changed = asyncio.Event()

    def __call__(self, queue: str, entries: list[Entry]) -> None:
        self.entries.extend(entries)
        self._changed.set()

    @property
    def ids(self) -> list[int]:
        return [entry.id for entry in self.entries]

    async def wait_for(self, count: int) -> list[Entry]:
        async with asyncio.timeout(5000 * MS):
            while len(self.entries) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.entries[:count]

"""`PostgresScheduleStore`: recurring schedules in PostgreSQL, shared by every node.

Every node runs a scheduler over the same rows. Which node fires an
instant is decided by `claim`, a compare-and-set on the row
(``claimed_for``, ``claimed_by``): one node wins each instant; a claim held
by a node presumed dead may be taken over. The fire itself is recorded in
the batch of its message (`storage.postgres.batches`), as a second
compare-and-set that takes the message back if the instant was fired
already: a claim decides who fires, the batch makes "never twice" certain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

from broker_core.errors import QueueNotFound

from ..schedule_rows import SCHEDULE_COLUMNS, decode_schedule, encode_schedule
from .connection import row_count

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker_core.schedules import Schedule

__all__ = ["PostgresScheduleStore"]

_CLAIM = """
UPDATE broker_schedules s SET claimed_for = $3, claimed_by = $4
WHERE s.queue = $1 AND s.name = $2 AND NOT s.paused
  AND (s.last_fired IS NULL OR s.last_fired < $3)
  AND (s.claimed_for IS NULL OR s.claimed_for < $3
       OR (s.claimed_for = $3 AND (s.claimed_by = $4 OR NOT EXISTS (
           SELECT 1 FROM broker_nodes n WHERE n.id = s.claimed_by AND NOT n.dead))))
RETURNING true
"""
"""Take ``instant`` ($3) for node $4: not fired, and no live node (but this one) holds it."""


class PostgresScheduleStore:
    """The `broker_core.schedules.ScheduleStore` of a `PostgresStorage`.

    Args:
        pool: returns the storage's connection pool (open() first).
        before_write: waits for the buffered writes and refuses a write
            while this node is presumed dead.
        node_id: returns this node's id in ``broker_nodes`` (new at each join).
    """

    def __init__(
        self,
        pool: Callable[[], Any],
        before_write: Callable[[], Awaitable[None]],
        node_id: Callable[[], int],
    ) -> None:
        self._pool = pool
        self._before_write = before_write
        self._node_id = node_id

    async def load(self, queue: str | None = None) -> list[Schedule]:
        """Every schedule (of ``queue``), by queue and name."""
        where, args = ("WHERE queue = $1", (queue,)) if queue is not None else ("", ())
        rows = await self._pool().fetch(
            f"SELECT {SCHEDULE_COLUMNS} FROM broker_schedules {where} ORDER BY queue, name", *args
        )
        return [decode_schedule(row) for row in rows]

    async def get(self, queue: str, name: str) -> Schedule | None:
        """One schedule, or ``None``."""
        row = await self._pool().fetchrow(
            f"SELECT {SCHEDULE_COLUMNS} FROM broker_schedules WHERE queue = $1 AND name = $2",
            queue,
            name,
        )
        return decode_schedule(row) if row is not None else None

    async def insert(self, schedule: Schedule) -> bool:
        """Store a new schedule; ``False`` if the name is taken (`QueueNotFound`: no queue)."""
        await self._before_write()
        try:
            status = await self._pool().execute(
                f"INSERT INTO broker_schedules ({SCHEDULE_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (queue, name) DO NOTHING",
                schedule.queue,
                schedule.name,
                encode_schedule(schedule),
                schedule.created_at,
                schedule.paused,
                schedule.resumed_at,
                schedule.last_fired,
            )
        except asyncpg.ForeignKeyViolationError:
            raise QueueNotFound(schedule.queue) from None
        return row_count(status) > 0

    async def set_paused(self, queue: str, name: str, paused: bool, now: float) -> Schedule | None:
        """Pause or resume; ``None`` if there is no such schedule."""
        await self._before_write()
        status = await self._pool().execute(
            "UPDATE broker_schedules SET paused = $3, resumed_at = CASE WHEN $3 THEN resumed_at "
            "WHEN paused THEN $4 ELSE resumed_at END WHERE queue = $1 AND name = $2",
            queue,
            name,
            paused,
            now,
        )
        return await self.get(queue, name) if row_count(status) else None

    async def delete(self, queue: str, name: str) -> bool:
        """Delete a schedule; return whether it existed."""
        await self._before_write()
        status = await self._pool().execute(
            "DELETE FROM broker_schedules WHERE queue = $1 AND name = $2", queue, name
        )
        return row_count(status) > 0

    async def claim(self, queue: str, name: str, instant: float) -> bool:
        """Take ``instant`` for this node (see `_CLAIM`); whether it may fire it."""
        await self._before_write()
        won = await self._pool().fetchval(_CLAIM, queue, name, instant, self._node_id())
        return bool(won)

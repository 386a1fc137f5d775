"""`SQLiteScheduleStore`: recurring schedules in the SQLite file (table ``schedules``).

Writes run in the writer thread after the journal operations buffered
before them; reads go through the read-only connection. One broker
process owns the file, so a claim needs no compare-and-set: it only
checks that the schedule is still there and not paused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker_core.errors import QueueNotFound

from ..schedule_rows import SCHEDULE_COLUMNS, decode_schedule, encode_schedule

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    import aiosqlite

    from broker_core.schedules import Schedule

    from .writer import SQLiteWriter

__all__ = ["SQLiteScheduleStore", "create_schedules_table"]


def create_schedules_table(db: sqlite3.Connection) -> None:
    """Migration step: the ``schedules`` table, emptied of a queue's rows when it is deleted."""
    db.execute(
        "CREATE TABLE schedules ("
        " queue TEXT NOT NULL, name TEXT NOT NULL, definition BLOB NOT NULL,"
        " created_at REAL NOT NULL, paused INTEGER NOT NULL DEFAULT 0,"
        " resumed_at REAL NOT NULL DEFAULT 0, last_fired REAL,"
        " PRIMARY KEY (queue, name)) WITHOUT ROWID"
    )
    db.execute(
        "CREATE TRIGGER schedules_of_deleted_queue AFTER DELETE ON queues "
        "BEGIN DELETE FROM schedules WHERE queue = old.name; END"
    )


class SQLiteScheduleStore:
    """The `broker_core.schedules.ScheduleStore` of a `SQLiteStorage`.

    Args:
        writer: the storage's writer thread.
        reader: returns the storage's read-only connection (open() first).
    """

    def __init__(self, writer: SQLiteWriter, reader: Callable[[], aiosqlite.Connection]) -> None:
        self._writer = writer
        self._reader = reader

    async def load(self, queue: str | None = None) -> list[Schedule]:
        """Every schedule (of ``queue``), by queue and name."""
        await self._writer.flush()
        where, params = ("WHERE queue = ?", (queue,)) if queue is not None else ("", ())
        async with self._reader().execute(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules {where} ORDER BY queue, name", params
        ) as cursor:
            return [decode_schedule(row) for row in await cursor.fetchall()]

    async def get(self, queue: str, name: str) -> Schedule | None:
        """One schedule, or ``None``."""
        await self._writer.flush()
        async with self._reader().execute(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE queue = ? AND name = ?",
            (queue, name),
        ) as cursor:
            row = await cursor.fetchone()
        return decode_schedule(row) if row is not None else None

    async def insert(self, schedule: Schedule) -> bool:
        """Store a new schedule; ``False`` if the name is taken (`QueueNotFound`: no queue)."""

        def insert(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM queues WHERE name = ?", (schedule.queue,)).fetchone():
                cursor = db.execute(
                    f"INSERT OR IGNORE INTO schedules ({SCHEDULE_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        schedule.queue,
                        schedule.name,
                        encode_schedule(schedule),
                        schedule.created_at,
                        int(schedule.paused),
                        schedule.resumed_at,
                        schedule.last_fired,
                    ),
                )
                return cursor.rowcount > 0
            raise QueueNotFound(schedule.queue)

        await self._writer.flush()
        return await self._writer.call(insert)

    async def set_paused(self, queue: str, name: str, paused: bool, now: float) -> Schedule | None:
        """Pause or resume; ``None`` if there is no such schedule."""
        changed = await self._direct(
            "UPDATE schedules SET paused = ?, resumed_at = CASE WHEN ? THEN resumed_at "
            "WHEN paused THEN ? ELSE resumed_at END WHERE queue = ? AND name = ?",
            (int(paused), int(paused), now, queue, name),
        )
        return await self.get(queue, name) if changed else None

    async def delete(self, queue: str, name: str) -> bool:
        """Delete a schedule; return whether it existed."""
        return (
            await self._direct("DELETE FROM schedules WHERE queue = ? AND name = ?", (queue, name))
            > 0
        )

    async def claim(self, queue: str, name: str, instant: float) -> bool:
        """Whether the schedule is there, not paused, and has not fired ``instant`` yet."""
        async with self._reader().execute(
            "SELECT 1 FROM schedules WHERE queue = ? AND name = ? AND NOT paused "
            "AND (last_fired IS NULL OR last_fired < ?)",
            (queue, name, instant),
        ) as cursor:
            return await cursor.fetchone() is not None

    async def _direct(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one statement in the writer thread, after the operations buffered before it."""
        await self._writer.flush()
        return await self._writer.call(lambda db: max(db.execute(sql, params).rowcount, 0))

"""Reading message histories and ack results back from SQLite (written by `batches`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["read_history", "read_result"]


async def read_history(reader: aiosqlite.Connection, id: int) -> tuple[float, str | None] | None:
    """The ``created_at`` and ``history`` columns of message ``id`` (`broker_core.history`)."""
    async with reader.execute(
        "SELECT created_at, history FROM messages WHERE id = ?", (id,)
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else (row[0], row[1])


async def read_result(reader: aiosqlite.Connection, id: int) -> bytes | None:
    """The result the ack of message ``id`` carried, if any."""
    async with reader.execute(
        "SELECT result FROM message_results WHERE message_id = ?", (id,)
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else bytes(row[0])

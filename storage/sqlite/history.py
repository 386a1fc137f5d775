"""Reading message histories and ack results back from SQLite (written by `batches`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["read_history", "read_result"]


async def read_history(reader: aiosqlite.Connection, id: int) -> list[bytes]:
    """The encoded events of message ``id``, in the order they were written."""
    async with reader.execute(
        "SELECT event FROM message_history WHERE message_id = ? ORDER BY rowid", (id,)
    ) as cursor:
        return [row[0] for row in await cursor.fetchall()]


async def read_result(reader: aiosqlite.Connection, id: int) -> bytes | None:
    """The result the ack of message ``id`` carried, if any."""
    async with reader.execute(
        "SELECT result FROM message_results WHERE message_id = ?", (id,)
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else bytes(row[0])

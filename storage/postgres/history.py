"""Reading message histories and ack results back from PostgreSQL (written by `batches`)."""

from __future__ import annotations

from typing import Any

__all__ = ["read_history", "read_result"]


async def read_history(pool: Any, id: int) -> tuple[float, str | None] | None:
    """The ``created_at`` and ``history`` columns of message ``id`` (`broker_core.history`)."""
    row = await pool.fetchrow("SELECT created_at, history FROM broker_messages WHERE id = $1", id)
    return None if row is None else (row[0], row[1])


async def read_result(pool: Any, id: int) -> bytes | None:
    """The result the ack of message ``id`` carried, if any."""
    value = await pool.fetchval(
        "SELECT result FROM broker_message_results WHERE message_id = $1", id
    )
    return None if value is None else bytes(value)

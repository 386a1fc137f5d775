"""Reading message histories and ack results back from PostgreSQL (written by `batches`)."""

from __future__ import annotations

from typing import Any

__all__ = ["read_history", "read_result"]


async def read_history(pool: Any, id: int) -> str | None:
    """The ``history`` column of message ``id`` (its events as JSON lines)."""
    value = await pool.fetchval("SELECT history FROM broker_messages WHERE id = $1", id)
    return None if value is None else str(value)


async def read_result(pool: Any, id: int) -> bytes | None:
    """The result the ack of message ``id`` carried, if any."""
    value = await pool.fetchval(
        "SELECT result FROM broker_message_results WHERE message_id = $1", id
    )
    return None if value is None else bytes(value)

"""Reading message histories and ack results back from PostgreSQL (written by `batches`)."""

from __future__ import annotations

from typing import Any

__all__ = ["read_history", "read_result"]


async def read_history(pool: Any, id: int) -> list[bytes]:
    """The encoded events of message ``id``, in the order they were written.

    Rows of one message are ordered by time, then by physical order (one
    batch inserts a message's events in order with the same ``at`` at most
    a few times).
    """
    rows = await pool.fetch(
        "SELECT event FROM broker_message_history WHERE message_id = $1 ORDER BY at, ctid", id
    )
    return [bytes(row[0]) for row in rows]


async def read_result(pool: Any, id: int) -> bytes | None:
    """The result the ack of message ``id`` carried, if any."""
    value = await pool.fetchval(
        "SELECT result FROM broker_message_results WHERE message_id = $1", id
    )
    return None if value is None else bytes(value)

"""Deleting PostgreSQL's retained messages, one node at a time, and vacuuming after them.

Processed messages past their retention time or count, and failed ones on
request, go in short transactions under a transaction-scoped advisory lock:
another node that finds it taken skips its pass, so two never delete the
same rows. `storage.retention` repeats `prune_batch` while batches come
back full.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import asyncpg
from loguru import logger

from ..retention import PRUNE_BATCH
from .connection import reason, row_count

if TYPE_CHECKING:
    from typing import Any

__all__ = ["MessagesVacuum", "prune_batch", "prune_failed"]

_PRUNE_LOCK = int.from_bytes(b"wsbprune", "big")
_VACUUM_EVERY_S = 10.0
_VACUUM_MIN_DEAD = 10_000


async def prune_failed(pool: Any, before: float) -> dict[str, int]:
    """Delete failed messages settled before ``before``; return how many per queue."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _PRUNE_LOCK):
            return {}  # another node is pruning
        rows = await conn.fetch(
            "WITH gone AS (DELETE FROM broker_messages WHERE status = 3 AND settled_at < $1 "
            "RETURNING queue) SELECT queue, count(*) FROM gone GROUP BY queue",
            before,
        )
    return {str(queue): int(count) for queue, count in rows}


async def prune_batch(
    pool: Any, now: float, retention_s: float, retention_count: int
) -> tuple[int, bool]:
    """Delete one batch of processed messages past ``retention_s`` or ``retention_count``.

    Returns how many rows went, and whether a statement deleted a full batch
    (nothing when another node holds the lock).
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _PRUNE_LOCK):
            return 0, False
        processed = await _prune_status(conn, 2, now - retention_s, retention_count)
        # Ended messages (status 4) are kept for their history by the same rules.
        ended = await _prune_status(conn, 4, now - retention_s, retention_count)
    return processed[0] + ended[0], processed[1] or ended[1]


async def _prune_status(
    conn: Any, status: int, before: float, retention_count: int
) -> tuple[int, bool]:
    """Delete one batch of messages of ``status`` settled before ``before`` or past
    ``retention_count`` per queue; how many went, and whether a batch was full."""
    old = row_count(
        await conn.execute(
            "DELETE FROM broker_messages WHERE id IN (SELECT id FROM broker_messages "
            "WHERE status = $3 AND settled_at < $1 LIMIT $2)",
            before,
            PRUNE_BATCH,
            status,
        )
    )
    deleted, full = old, old == PRUNE_BATCH
    for row in await conn.fetch("SELECT name FROM broker_queues"):
        over = row_count(
            await conn.execute(
                "DELETE FROM broker_messages WHERE id IN (SELECT id FROM broker_messages "
                "WHERE queue = $1 AND status = $4 ORDER BY id DESC OFFSET $2 LIMIT $3)",
                row[0],
                retention_count,
                PRUNE_BATCH,
                status,
            )
        )
        deleted += over
        full = full or over == PRUNE_BATCH
    return deleted, full


class MessagesVacuum:
    """VACUUMs the messages table when its dead rows outnumber a fifth of the live ones.

    Every settled message leaves dead row versions behind; autovacuum
    reclaims them where it runs (and may be off, or too slow for a
    queue's churn): without this the table grows with every message
    ever published instead of with what is retained.
    """

    def __init__(self) -> None:
        self._vacuumed_at = -_VACUUM_EVERY_S

    async def run_if_needed(self, pool: Any) -> None:
        """VACUUM (ANALYZE) the table if dead rows piled up and none ran in the last seconds."""
        if time.monotonic() - self._vacuumed_at < _VACUUM_EVERY_S:
            return
        row = await pool.fetchrow(
            "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables "
            "WHERE relid = 'broker_messages'::regclass"
        )
        if row is None or row[1] < max(_VACUUM_MIN_DEAD, row[0] // 5):
            return
        self._vacuumed_at = time.monotonic()
        try:
            await pool.execute("VACUUM (ANALYZE) broker_messages")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            logger.warning("vacuuming the messages table failed", reason=reason(exc))

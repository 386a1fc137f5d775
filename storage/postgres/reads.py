"""Reading PostgreSQL's queues and messages back: at start (queues, replay) and on request.

Reads run on the pool's sessions; the caller flushes the write-behind
buffer first when a read must see every operation this node wrote so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker_core.journal import ReplayedQueue
from broker_core.pending import pack_cold

from ..rows import (
    DELAYED_COLUMNS,
    ENTRY_COLUMNS,
    delayed_entry,
    stored_message,
    stored_queue,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from broker_core.journal import StoredMessage, StoredQueue
    from broker_core.messages import Entry
    from broker_core.types import MessageStatus

__all__ = [
    "SELECT_MESSAGES",
    "browse",
    "get_message",
    "last_message_id",
    "load_entries",
    "load_queues",
    "replay",
    "retryable_ids",
]

SELECT_MESSAGES = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM broker_messages"
"""Whole message rows, for `storage.rows.stored_message`."""


async def last_message_id(pool: Any) -> int:
    """The highest message id stored (version 1 kept the highest ever in ``broker_meta``).

    Ids made by nodes are later than any stored one (`broker_core.ids`),
    so a pruned id is not made again.
    """
    stored = await pool.fetchval("SELECT coalesce(max(id), 0) FROM broker_messages")
    kept = await pool.fetchval("SELECT value FROM broker_meta WHERE key = 'last_id'")
    return max(int(stored), int(kept or 0))


async def load_queues(pool: Any) -> list[StoredQueue]:
    """Every queue with its options, processed count and failed count."""
    rows = await pool.fetch(
        # `QUEUE_COLUMNS`, then the failed count.
        "SELECT q.name, q.options, q.created_at, q.updated_at, q.processed, "
        "(SELECT count(*) FROM broker_messages m WHERE m.queue = q.name AND m.status = 3) "
        "FROM broker_queues AS q ORDER BY q.name"
    )
    return [stored_queue(row[:5], row[5]) for row in rows]


async def replay(pool: Any, queue: str, now: float, dedup_window_s: float = 0.0) -> ReplayedQueue:
    """Ids, priorities and sizes of ready messages in id order; delayed ones as entries."""
    cold: list[int] = []
    grouped: list[int] = []
    names: list[str] = []
    groups: dict[str, str] = {}
    dedup: list[tuple[str, int, float]] = []
    async with pool.acquire() as conn, conn.transaction():
        # A cursor: a backlog of millions streams in instead of landing in one result.
        async for id, priority, size, group in conn.cursor(
            "SELECT id, priority, size, msg_group FROM broker_messages "
            "WHERE queue = $1 AND status = 0 AND deliver_at <= $2 ORDER BY id",
            queue,
            now,
            prefetch=20_000,
        ):
            # Packed as the pending order keeps them: no tuple per message.
            item = pack_cold(id, priority, size)
            if group is None:
                cold.append(item)
            else:
                grouped.append(item)
                names.append(groups.setdefault(group, group))
        delayed = [
            delayed_entry(row)
            for row in await conn.fetch(
                f"SELECT {DELAYED_COLUMNS} FROM broker_messages "
                "WHERE queue = $1 AND status = 0 AND deliver_at > $2 ORDER BY id",
                queue,
                now,
            )
        ]
        if dedup_window_s > 0:
            dedup.extend(
                (row[0], row[1], row[2])
                for row in await conn.fetch(
                    "SELECT dedup_id, id, created_at FROM broker_messages "
                    "WHERE queue = $1 AND dedup_id IS NOT NULL AND created_at > $2",
                    queue,
                    now - dedup_window_s,
                )
            )
    return ReplayedQueue(
        cold=cold, delayed=delayed, dedup=dedup, grouped=grouped, group_names=names
    )


async def load_entries(pool: Any, ids: Sequence[int]) -> list[Entry]:
    """Entries (with bodies) of those ``ids`` that are still pending."""
    rows = await pool.fetch(
        f"{SELECT_MESSAGES} WHERE id = ANY($1::bigint[]) AND status = 0 ORDER BY id", list(ids)
    )
    return [stored_message(row).entry for row in rows]


async def get_message(pool: Any, id: int) -> StoredMessage | None:
    """One message by id, whatever its status."""
    row = await pool.fetchrow(f"{SELECT_MESSAGES} WHERE id = $1", id)
    return stored_message(row) if row is not None else None


async def browse(
    pool: Any, queue: str, status: MessageStatus | None, limit: int, after: int | None
) -> list[StoredMessage]:
    """Messages of ``queue`` (of one status, or all) by ascending id after ``after``."""
    if status is None:
        rows = await pool.fetch(
            f"{SELECT_MESSAGES} WHERE queue = $1 AND id > $2 AND status <> 4 ORDER BY id LIMIT $3",
            queue,
            after or 0,
            limit,
        )
    else:
        rows = await pool.fetch(
            f"{SELECT_MESSAGES} WHERE queue = $1 AND id > $2 AND status = $3 AND status <> 4 "
            "ORDER BY id LIMIT $4",
            queue,
            after or 0,
            int(status),
            limit,
        )
    return [stored_message(row) for row in rows]


async def retryable_ids(pool: Any, queue: str, limit: int) -> list[int]:
    """Failed messages of ``queue`` and its dead-lettered pending ones, oldest first."""
    rows = await pool.fetch(
        "SELECT id FROM broker_messages WHERE queue = $1 AND (status = 3 OR "
        "(status = 0 AND dead_lettered_from IS NOT NULL)) ORDER BY id LIMIT $2",
        queue,
        limit,
    )
    return [int(row[0]) for row in rows]

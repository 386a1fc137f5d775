"""Reading SQLite's queues and messages back: at start (queues, replay) and on request.

Reads go through the storage's read-only connection, which WAL lets run
beside a commit; the caller flushes the writer first when a read must see
every operation written so far. Rows read through the `DeliveryHorizon` are
marked redelivered when an unclean stop may have delivered them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from broker_core.journal import ReplayedQueue
from broker_core.pending import pack_cold

from ..rows import (
    DELAYED_COLUMNS,
    ENTRY_COLUMNS,
    QUEUE_COLUMNS,
    delayed_entry,
    stored_message,
    stored_queue,
)
from .segments import OFFSET_BITS

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

    import aiosqlite

    from broker_core.journal import StoredMessage, StoredQueue
    from broker_core.messages import Entry
    from broker_core.types import MessageStatus

    from ..rows import DeliveryHorizon
    from .segments import SegmentLog

__all__ = [
    "browse",
    "get_message",
    "live_segments",
    "load_entries",
    "load_queues",
    "replay",
    "retryable_ids",
]

_SELECT = f"SELECT {', '.join(ENTRY_COLUMNS)}, body_ref FROM messages"
_ID, _SIZE, _CONTENT, _REF = (
    ENTRY_COLUMNS.index("id"),
    ENTRY_COLUMNS.index("size"),
    ENTRY_COLUMNS.index("content"),
    len(ENTRY_COLUMNS),
)


async def _with_bodies(rows: list[Any], bodies: SegmentLog) -> list[Any]:
    """``rows`` (``_SELECT``'s) with each body a segment holds read into ``content``.

    The reads (one ``pread`` each) run in a worker thread: a cold body may
    wait for the disk.
    """
    wanted = [(row[_REF], row[_ID], row[_SIZE]) for row in rows if row[_REF] is not None]
    if not wanted:
        return rows
    found = iter(await asyncio.to_thread(bodies.read_many, wanted))
    out = []
    for row in rows:
        if row[_REF] is not None:
            row = list(row)
            row[_CONTENT] = next(found)
        out.append(row)
    return out


def _message(row: Any, horizon: DeliveryHorizon) -> StoredMessage:
    return stored_message(row[:_REF], horizon)


def load_queues(db: sqlite3.Connection) -> list[StoredQueue]:
    """Every queue with its options, processed count and failed count (writer thread).

    Since schema 4 a queue's row counts the processed messages pruned; those
    still stored are counted here (an ack writes no queue row), through the
    partial indexes of processed and failed messages.
    """
    rows = db.execute(
        f"SELECT {QUEUE_COLUMNS}, "
        "(SELECT count(*) FROM messages WHERE queue = queues.name AND status = 2), "
        "(SELECT count(*) FROM messages WHERE queue = queues.name AND status = 3) "
        "FROM queues ORDER BY name"
    ).fetchall()
    return [stored_queue((*row[:4], row[4] + row[5]), row[6]) for row in rows]


async def replay(
    reader: aiosqlite.Connection,
    horizon: DeliveryHorizon,
    queue: str,
    now: float,
    dedup_window_s: float = 0.0,
) -> ReplayedQueue:
    """Ids, priorities and sizes of ready messages in id order; delayed ones as entries."""
    cold: list[int] = []
    grouped: list[int] = []
    names: list[str] = []
    groups: dict[str, str] = {}
    async with reader.execute(
        "SELECT id, priority, size, msg_group FROM messages "
        "WHERE queue = ? AND status = 0 AND deliver_at <= ? ORDER BY id",
        (queue, now),
    ) as cursor:
        while rows := await cursor.fetchmany(20_000):
            for id, priority, size, group in rows:
                # Packed here: the int the pending order keeps, no tuple per message.
                item = pack_cold(id, priority, size)
                if group is None:
                    cold.append(item)
                else:
                    grouped.append(item)
                    # One string per group, not one per message.
                    names.append(groups.setdefault(group, group))
    delayed = []
    async with reader.execute(
        f"SELECT {DELAYED_COLUMNS} "
        "FROM messages WHERE queue = ? AND status = 0 AND deliver_at > ? ORDER BY id",
        (queue, now),
    ) as cursor:
        async for row in cursor:
            delayed.append(delayed_entry(row, horizon))
    dedup: list[tuple[str, int, float]] = []
    if dedup_window_s > 0:
        async with reader.execute(
            "SELECT dedup_id, id, created_at FROM messages "
            "WHERE queue = ? AND dedup_id IS NOT NULL AND created_at > ?",
            (queue, now - dedup_window_s),
        ) as cursor:
            dedup.extend((row[0], row[1], row[2]) for row in await cursor.fetchall())
    return ReplayedQueue(
        cold=cold, delayed=delayed, dedup=dedup, grouped=grouped, group_names=names
    )


async def load_entries(
    reader: aiosqlite.Connection, bodies: SegmentLog, horizon: DeliveryHorizon, ids: Sequence[int]
) -> list[Entry]:
    """Entries (with bodies) of those ``ids`` that are still pending."""
    out: list[Entry] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        async with reader.execute(
            f"{_SELECT} WHERE id IN ({marks}) AND status = 0", tuple(chunk)
        ) as cursor:
            rows = await _with_bodies(list(await cursor.fetchall()), bodies)
        out.extend(_message(row, horizon).entry for row in rows)
    return out


async def get_message(
    reader: aiosqlite.Connection, bodies: SegmentLog, horizon: DeliveryHorizon, id: int
) -> StoredMessage | None:
    """One message by id, whatever its status."""
    async with reader.execute(f"{_SELECT} WHERE id = ?", (id,)) as cursor:
        rows = list(await cursor.fetchall())
    return _message((await _with_bodies(rows, bodies))[0], horizon) if rows else None


async def browse(
    reader: aiosqlite.Connection,
    bodies: SegmentLog,
    horizon: DeliveryHorizon,
    queue: str,
    status: MessageStatus | None,
    limit: int,
    after: int | None,
) -> list[StoredMessage]:
    """Messages of ``queue`` (of one status, or all) by ascending id after ``after``."""
    # Ended messages (status 4) are kept for their history only: never browsed.
    sql = f"{_SELECT} WHERE queue = ? AND id > ? AND status <> 4"
    params: tuple[Any, ...] = (queue, after or 0)
    if status is not None:
        # A literal status: SQLite uses a partial index only for a constant (schema 4).
        sql += f" AND status = {int(status)}"
    sql += " ORDER BY id LIMIT ?"
    async with reader.execute(sql, (*params, limit)) as cursor:
        rows = list(await cursor.fetchall())
    return [_message(row, horizon) for row in await _with_bodies(rows, bodies)]


async def retryable_ids(reader: aiosqlite.Connection, queue: str, limit: int) -> list[int]:
    """Failed messages of ``queue`` and its dead-lettered pending ones, oldest first."""
    async with reader.execute(
        # Two partial indexes (schema 4), one per status.
        "SELECT id FROM (SELECT id FROM messages WHERE queue = ? AND status = 3 "
        "UNION ALL SELECT id FROM messages WHERE queue = ? AND status = 0 "
        "AND dead_lettered_from IS NOT NULL) ORDER BY id LIMIT ?",
        (queue, queue, limit),
    ) as cursor:
        return [row[0] for row in await cursor.fetchall()]


async def live_segments(reader: aiosqlite.Connection) -> set[int]:
    """The numbers of the segments some row references (a scan of every row)."""
    async with reader.execute(
        f"SELECT DISTINCT body_ref >> {OFFSET_BITS} FROM messages WHERE body_ref IS NOT NULL"
    ) as cursor:
        return {row[0] for row in await cursor.fetchall()}

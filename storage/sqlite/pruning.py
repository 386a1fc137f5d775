"""Deleting SQLite's retained messages: processed ones past retention, failed ones on request.

Each function runs in the writer thread, after the caller recorded the
highest message id (rows that go may have held it): `prune_batch` one
transaction per queue (the processed rows it deletes are added to the
queue's ``processed``, which counts pruned ones since schema 4; ended
messages, status 4, go by the same rules and are counted nowhere),
`prune_failed` in one transaction. `storage.retention` repeats
`prune_batch` while batches come back full; SQLite reuses the freed pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..retention import PRUNE_BATCH
from .batches import transaction

if TYPE_CHECKING:
    import sqlite3

__all__ = ["prune_batch", "prune_failed"]


def prune_batch(
    db: sqlite3.Connection, now: float, retention_s: float, retention_count: int
) -> tuple[int, bool]:
    """Delete one batch of processed messages past ``retention_s`` or ``retention_count``.

    Returns how many rows went, and whether a statement deleted a full batch.
    """
    deleted = 0
    full = False
    for (queue,) in db.execute("SELECT name FROM queues").fetchall():
        # Per queue, through messages_processed (no index by settled time since
        # schema 4); the queue's row counts what goes, in the same transaction.
        with transaction(db):
            cursor = db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                "WHERE queue = ? AND status = 2 AND settled_at < ? LIMIT ?)",
                (queue, now - retention_s, PRUNE_BATCH),
            )
            by_time = max(cursor.rowcount, 0)
            cursor = db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                "WHERE queue = ? AND status = 2 ORDER BY id DESC LIMIT ? OFFSET ?)",
                (queue, PRUNE_BATCH, retention_count),
            )
            over = max(cursor.rowcount, 0)
            if by_time + over:
                db.execute(
                    "UPDATE queues SET processed = processed + ? WHERE name = ?",
                    (by_time + over, queue),
                )
        deleted += by_time + over
        full = full or by_time == PRUNE_BATCH or over == PRUNE_BATCH
        ended, ended_full = _prune_ended(db, queue, now - retention_s, retention_count)
        deleted += ended
        full = full or ended_full
    return deleted, full


def _prune_ended(
    db: sqlite3.Connection, queue: str, before: float, retention_count: int
) -> tuple[int, bool]:
    """Delete one batch of ``queue``'s ended messages, by the processed retention's rules.

    Ended messages (status 4: cancelled, expired, dropped) are kept only for
    their history, through ``messages_ended``; they are counted nowhere, so
    no queue row changes.
    """
    with transaction(db):
        by_time = max(
            db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                "WHERE queue = ? AND status = 4 AND settled_at < ? LIMIT ?)",
                (queue, before, PRUNE_BATCH),
            ).rowcount,
            0,
        )
        over = max(
            db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages "
                "WHERE queue = ? AND status = 4 ORDER BY id DESC LIMIT ? OFFSET ?)",
                (queue, PRUNE_BATCH, retention_count),
            ).rowcount,
            0,
        )
    return by_time + over, by_time == PRUNE_BATCH or over == PRUNE_BATCH


def prune_failed(db: sqlite3.Connection, before: float) -> dict[str, int]:
    """Delete failed messages settled before ``before``; return how many per queue."""
    counts: dict[str, int] = {}
    with transaction(db):
        # Per queue, through messages_failed: no index by settled time (schema 4).
        for (queue,) in db.execute("SELECT name FROM queues").fetchall():
            count = db.execute(
                "DELETE FROM messages WHERE queue = ? AND status = 3 AND settled_at < ?",
                (queue, before),
            ).rowcount
            if count > 0:
                counts[queue] = count
        return counts

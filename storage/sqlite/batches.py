"""Writing one coalesced batch of journal operations to SQLite, in one transaction.

`storage.coalesce` turns a batch into steps; here each step becomes SQL: a
segment's inserts as one ``executemany``, one ``executemany`` per patch
shape, then drops; a queue-level step (put, purge,
delete) in its place between segments.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from broker_core.journal import DeleteQueue, FireSchedule, PurgeQueue, PutQueue

from ..coalesce import Barrier, Segment
from ..rows import COLUMN_INDEX, INSERT_COLUMNS, encode_options

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from .segments import SegmentLog

__all__ = ["stage_bodies", "transaction", "write_last_id", "write_step"]

_INSERT = (
    f"INSERT INTO messages ({', '.join(INSERT_COLUMNS)}, body_ref) "
    f"VALUES ({', '.join('?' * (len(INSERT_COLUMNS) + 1))})"
)
_CONTENT = COLUMN_INDEX["content"]
_EMPTY = b""
_ASSIGN = {
    "history": "history = coalesce(history, '') || ?",
    # Only an ended message's body is patched (emptied): its segment record is freed too.
    "content": "content = ?, body_ref = NULL",
}


def stage_bodies(steps: Sequence[Segment | Barrier], log: SegmentLog, inline_max: int) -> None:
    """Append the bodies of a plan's inserts to ``log`` and put references in their rows.

    Each inserted row gets its ``body_ref`` (the last value, after the
    `INSERT_COLUMNS`); a body over ``inline_max`` bytes leaves the row, which
    keeps an empty ``content``. Call `SegmentLog.write` before the commit.
    """
    for step in steps:
        if type(step) is not Segment:
            continue
        for id, row in step.inserts.items():
            content = row[_CONTENT]
            if len(content) > inline_max:
                row.append(log.append(id, content))
                row[_CONTENT] = _EMPTY
            else:
                row.append(None)


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back when the body raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        # SQLite may have rolled back already (SQLITE_FULL, I/O errors):
        # the original error is the one to report.
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def write_last_id(db: sqlite3.Connection, last_id: int) -> None:
    """Record the highest message id ever stored in ``meta``."""
    db.execute("INSERT OR REPLACE INTO meta VALUES ('last_id', ?)", (str(last_id),))


def write_step(db: sqlite3.Connection, step: Segment | Barrier) -> None:
    """Write one step of a coalesced batch (in the batch's transaction)."""
    match step:
        case Segment():
            _write_segment(db, step)
        case PutQueue(name=name, options=options, created_at=created, updated_at=updated):
            db.execute(
                "INSERT INTO queues (name, options, created_at, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "options = excluded.options, updated_at = excluded.updated_at",
                (name, encode_options(options), created, updated),
            )
        case PurgeQueue(name=name):
            db.execute("DELETE FROM messages WHERE queue = ? AND status = 0", (name,))
        case DeleteQueue(name=name):
            db.execute("DELETE FROM messages WHERE queue = ?", (name,))
            db.execute("DELETE FROM queues WHERE name = ?", (name,))
        case FireSchedule(queue=queue, name=name, instant=instant):
            db.execute(
                "UPDATE schedules SET last_fired = max(coalesce(last_fired, ?1), ?1) "
                "WHERE queue = ?2 AND name = ?3",
                (instant, queue, name),
            )


def _write_segment(db: sqlite3.Connection, segment: Segment) -> None:
    """Render one coalesced segment: inserts, one ``executemany`` per patch shape, drops, counts."""
    if segment.inserts:
        db.executemany(_INSERT, list(segment.inserts.values()))
    for columns, params in segment.shapes().items():
        assignments = ", ".join(_ASSIGN.get(column) or f"{column} = ?" for column in columns)
        db.executemany(f"UPDATE messages SET {assignments} WHERE id = ?", params)
    if segment.results:
        db.executemany(
            "INSERT OR REPLACE INTO message_results (message_id, result) VALUES (?, ?)",
            segment.result_rows(),
        )
    if segment.drops:
        db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in segment.drops])
    # ``segment.acked`` is not written: a queue's processed count is its processed
    # rows plus those pruned (schema 4), so an ack touches no queue row.

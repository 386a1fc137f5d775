"""The SQLite schema's version: created on a new file, migrated step by step on an old one.

Each schema version is a step in `MIGRATIONS`, applied in order at open,
each in one transaction with the record of it: a crash between two steps
leaves the file at the last whole step, and the next start carries on from
there. Version 1 is ``schema.sql`` (release 0.1.0); version 2 adds the
version table itself, ``schema_version(version, applied_at, release)``,
one row per step (the steps a database got before the table existed have
no time or release). Later steps: 3 topics and their bindings, 4 service
tokens, 5 ``schedules`` (`.schedules`), 6 ``messages.body_ref`` (bodies in
segment files, `.segments`), 7 webhooks, 8 ``messages.msg_group``, 9
message histories and ack results, 10 indexes an ack leaves alone, 11 the
index of ended messages (status 4: cancelled, expired, dropped, kept body-less
for their history).

``PRAGMA user_version`` is kept equal to the newest step, in the same
transaction: it is what release 0.1.0 reads, so an older broker refuses a
newer file instead of serving it, and it answers "which version?" without
a table (0: a new, empty file). The table, when there, must agree with it.

A file from a newer release (a version past `SCHEMA_VERSION`) is refused
before anything is written to it (`storage.errors.StorageTooNew`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import suppress
from importlib import resources
from typing import TYPE_CHECKING

from loguru import logger

from ..errors import StorageCorrupt, StorageTooNew
from ..release import release
from .schedules import create_schedules_table
from .webhooks import create_webhooks_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "check_database", "migrate", "stored_version"]


def _statements(sql: str) -> Iterator[str]:
    """The statements of a script, one by one (``executescript`` would commit first)."""
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    assert not pending.strip(" \n-"), "the script ends with a whole statement"


def _run_file(name: str) -> Callable[[sqlite3.Connection], None]:
    def step(db: sqlite3.Connection) -> None:
        for statement in _statements(resources.files(__package__).joinpath(name).read_text()):
            db.execute(statement)

    step.__doc__ = f"Run ``{name}``."
    return step


def _version_table(db: sqlite3.Connection) -> None:
    """Create the table that records each step (the runner fills it)."""
    db.execute(
        "CREATE TABLE schema_version ("
        " version INTEGER PRIMARY KEY, applied_at REAL, release TEXT) WITHOUT ROWID"
    )


def _topics(db: sqlite3.Connection) -> None:
    """Create the tables of topics and their bindings (`storage.sqlite.topics`)."""
    db.execute(
        "CREATE TABLE topics ("
        " name TEXT PRIMARY KEY, created_at REAL NOT NULL, version INTEGER NOT NULL DEFAULT 0)"
        " WITHOUT ROWID"
    )
    db.execute(
        "CREATE TABLE topic_bindings ("
        " topic TEXT NOT NULL, queue TEXT NOT NULL, pattern TEXT NOT NULL,"
        " created_at REAL NOT NULL, PRIMARY KEY (topic, queue, pattern)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX topic_bindings_by_queue ON topic_bindings (queue)")


def _service_tokens(db: sqlite3.Connection) -> None:
    """Add the table of service tokens (``broker_core.service_tokens``), one document each."""
    db.execute("CREATE TABLE service_tokens (id TEXT PRIMARY KEY, document BLOB NOT NULL)")


def _body_refs(db: sqlite3.Connection) -> None:
    """Bodies move to segment files (`storage.sqlite.segments`); a row keeps a reference.

    ``body_ref`` is ``NULL`` for a body kept in the row's ``content`` (every
    row of a database migrated from an older version, and empty bodies),
    else the record's reference, with ``content`` left empty. Old rows are
    read in place, not moved: the step only adds a column, so a data dir
    with a million messages upgrades at once, without a second copy of
    every body on disk or a window where a crash leaves a body in neither
    place; their space comes back as they are acked and pruned.
    """
    db.execute("ALTER TABLE messages ADD COLUMN body_ref INTEGER")


def _message_groups(db: sqlite3.Connection) -> None:
    """Messages carry their ``group`` (issue 24: ordered per group, fair across groups)."""
    db.execute("ALTER TABLE messages ADD COLUMN msg_group TEXT")


def _history_tables(db: sqlite3.Connection) -> None:
    """Message histories (a column of the row: appended, gone with it) and ack results."""
    db.execute("ALTER TABLE messages ADD COLUMN history TEXT")
    db.execute(
        "CREATE TABLE message_results (message_id INTEGER PRIMARY KEY, result BLOB NOT NULL)"
    )
    db.execute(
        "CREATE TRIGGER message_results_gone AFTER DELETE ON messages BEGIN"
        " DELETE FROM message_results WHERE message_id = old.id; END"
    )


def _fewer_pages_per_ack(db: sqlite3.Connection) -> None:
    """An ack rewrites fewer pages: indexes that a status change leaves alone, no counter row.

    At a low rate each message commits on its own, and a commit writes
    every page it touches whole to the WAL. ``messages_by_queue``
    ``(queue, status, id)`` moved a message's entry with each status (two
    or three leaves per message), ``messages_settled`` took one more and
    the queue's ``processed`` row another. Now partial indexes
    ``(queue, id)`` per status hold pending, processed and failed
    messages: a message published and delivered in one commit (the usual
    case) gets no entry until its ack adds one at the newest leaf of
    ``messages_processed``. Messages being processed have none (recovery
    finds them by a scan at start, `browse` of that status scans by id),
    deduplication ids one of their own. ``queues.processed`` now counts the
    processed messages pruned; those still stored are counted when queues
    load, so after any crash the count agrees with the rows.
    """
    db.execute("DROP INDEX IF EXISTS messages_settled")
    db.execute("DROP INDEX IF EXISTS messages_by_queue")
    db.execute("CREATE INDEX messages_ready ON messages (queue, id) WHERE status = 0")
    db.execute("CREATE INDEX messages_processed ON messages (queue, id) WHERE status = 2")
    db.execute("CREATE INDEX messages_failed ON messages (queue, id) WHERE status = 3")
    db.execute(
        "CREATE INDEX messages_dedup ON messages (queue, dedup_id) WHERE dedup_id IS NOT NULL"
    )
    db.execute(
        "UPDATE queues SET processed = processed - (SELECT count(*) FROM messages "
        "WHERE queue = queues.name AND status = 2)"
    )


def _ended_messages(db: sqlite3.Connection) -> None:
    """Ended messages (status 4) keep a body-less row for their history; pruning finds them here.

    A message cancelled, expired or dropped with no dead-letter queue used
    to be deleted at once, its history with it. Now it stays, like a
    processed one, for the processed retention (time and count per queue):
    the partial index ``(queue, id)`` is what the pruner walks. Rows of an
    older file need nothing: none has status 4.
    """
    db.execute("CREATE INDEX messages_ended ON messages (queue, id) WHERE status = 4")


MIGRATIONS: tuple[tuple[int, Callable[[sqlite3.Connection], None]], ...] = (
    (1, _run_file("schema.sql")),
    (2, _version_table),
    (3, _topics),
    (4, _service_tokens),
    (5, create_schedules_table),
    (6, _body_refs),
    (7, create_webhooks_table),
    (8, _message_groups),
    (9, _history_tables),
    (10, _fewer_pages_per_ack),
    (11, _ended_messages),
)
"""Every step, in order: ``(version, function run inside the step's transaction)``."""
SCHEMA_VERSION = MIGRATIONS[-1][0]
"""The newest version this release knows: a database past it is refused."""
_TABLE_SINCE = 2
"""The first version that has the ``schema_version`` table."""


def stored_version(db: sqlite3.Connection, where: str) -> int:
    """The database's schema version (0: new), checked against this release.

    Raises:
        StorageTooNew: a newer release wrote it.
        StorageCorrupt: the version table disagrees with the file's header.
    """
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageTooNew(where, version, SCHEMA_VERSION)
    if version < 0:
        raise StorageCorrupt(where, f"unknown schema version {version}")
    if version >= _TABLE_SINCE:
        try:
            (recorded,) = db.execute("SELECT max(version) FROM schema_version").fetchone()
        except sqlite3.OperationalError as exc:
            raise StorageCorrupt(where, f"schema version {version}: {exc}") from None
        if recorded != version:
            raise StorageCorrupt(
                where, f"the header says schema {version}, the version table {recorded}"
            )
    return version


_checked: set[tuple[str, int, int]] = set()
"""Files `check_database` found sound in this process, as `_stamp` saw them."""


def _stamp(path: Path | str) -> tuple[str, int, int] | None:
    """The file and its WAL as they are now (a write after a check changes a size or mtime)."""
    try:
        stat = os.stat(path)
        wal = os.stat(f"{path}-wal") if os.path.exists(f"{path}-wal") else stat
    except OSError:
        return None
    return os.path.realpath(path), stat.st_mtime_ns ^ wal.st_mtime_ns, stat.st_size + wal.st_size


def check_database(path: Path) -> None:
    """Fail fast, before serving, when ``path`` exists but is no usable database (read-only).

    Raises:
        StorageTooNew: a newer release wrote it.
        StorageCorrupt: with a one-line reason.
    """
    if not path.exists():
        return
    where = str(path)
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            # The version first: a newer release's file is refused for that, not for its content.
            stored_version(connection, where)
            row = connection.execute("PRAGMA quick_check").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise StorageCorrupt(where, str(exc)) from None
    if row is not None and row[0] == "ok" and (stamp := _stamp(path)) is not None:
        _checked.add(stamp)
    if row is None or row[0] != "ok":
        raise StorageCorrupt(where, f"integrity check says {row}")


def migrate(db: sqlite3.Connection, where: str) -> None:
    """Check the file, then apply each step it lacks (the writer's connection, autocommit).

    Raises:
        StorageTooNew: a newer release wrote it (nothing was written).
        StorageCorrupt: the file fails its check.
    """
    version = stored_version(db, where)
    # `check_database` just read the whole file before serving (`storage.check_storage`):
    # unchanged since, a second pass would only add its half second per 150 MB to the start.
    stamp = _stamp(where)
    if stamp is not None and stamp in _checked:
        _checked.discard(stamp)
    else:
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StorageCorrupt(where, f"integrity check says {check}")
    _apply(db, where, version)


def _apply(db: sqlite3.Connection, where: str, version: int) -> None:
    """Apply each migration step newer than ``version``."""
    applied: dict[int, float] = {}
    for step_version, step in MIGRATIONS:
        if step_version <= version:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            applied[step_version] = time.time()
            if step_version >= _TABLE_SINCE:
                # Steps before the table (this open's, or an old release's) get their row now.
                db.executemany(
                    "INSERT OR IGNORE INTO schema_version VALUES (?, ?, ?)",
                    [
                        (v, applied.get(v), release() if v in applied else None)
                        for v in range(1, step_version + 1)
                    ],
                )
            db.execute(f"PRAGMA user_version={step_version}")
        except BaseException:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    if applied and version:
        logger.info("database schema migrated", database=where, version=SCHEMA_VERSION)

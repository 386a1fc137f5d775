"""The floor of SQLite's disk writes per message at a low rate, for candidate schemas.

Run: ``python -m benchmarks.wal_floor [--seconds 5] [--page-sizes 1024 4096 16384]``.

No broker: one thread commits at 1,000 transactions a second, each holding
one 1 KiB publish and the previous message's ack (what a broker at 1,000
msg/s with a consumer acking each commits), while another thread runs a
``PASSIVE`` checkpoint every 100 ms (as ``storage.sqlite.checkpointer``
does). The figure is the process's ``write_bytes`` (``/proc/self/io``) per
message: what the kernel was asked to write, WAL and checkpoints together.
It shows how far a schema can get before any broker code runs:

* ``row``: today's table, the body in the row the ack rewrites, indexed by
  (queue, status, id);
* ``split``: bodies in a table of their own, state rows indexed as above;
* ``append``: the message row written once, the ack appended as an event;
* ``log``: one append-only table for publishes and acks;
* ``segments``: the broker's layout since schema 3 (`storage.sqlite.segments`):
  the body appended to a file beside the database before the commit, the
  row holding state and a reference, with the broker's two indexes and the
  queue's processed counter the ack adds to;
* ``lean``: ``segments`` without the index by settled time, and no
  processed counter to add to (a step towards schema 4);
* ``partial``: schema 4 (`storage.sqlite.migrations`): partial indexes
  ``(queue, id)`` per status instead of ``(queue, status, id)``, no
  counter; the message is inserted delivered (status 1), as the broker
  writes a publish pushed to a waiting consumer in the same turn, so its
  only index entry is its ack's.

WAL frames are whole pages and a checkpoint copies each page again, so a
commit costs at least a page per table it touches plus the body's second copy.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .harness import positive_int, save

__all__ = ["main"]

SCHEMAS = {
    "row": """
        CREATE TABLE messages (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, status INTEGER NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            settled_at REAL NOT NULL DEFAULT 0, size INTEGER NOT NULL, content BLOB NOT NULL);
        CREATE INDEX messages_by_queue ON messages (queue, status, id);""",
    "split": """
        CREATE TABLE bodies (id INTEGER PRIMARY KEY, content BLOB NOT NULL);
        CREATE TABLE messages (id INTEGER PRIMARY KEY, queue INTEGER NOT NULL,
            status INTEGER NOT NULL, attempt INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, settled_at REAL NOT NULL DEFAULT 0, size INTEGER NOT NULL);
        CREATE INDEX messages_by_queue ON messages (queue, status, id);""",
    "append": """
        CREATE TABLE messages (id INTEGER PRIMARY KEY, queue INTEGER NOT NULL,
            created_at REAL NOT NULL, size INTEGER NOT NULL, content BLOB NOT NULL);
        CREATE TABLE events (seq INTEGER PRIMARY KEY, message INTEGER NOT NULL,
            kind INTEGER NOT NULL, at REAL NOT NULL);""",
    "log": """
        CREATE TABLE log (seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, message INTEGER,
            at REAL NOT NULL, data BLOB);""",
    "segments": """
        CREATE TABLE queues (name TEXT PRIMARY KEY, processed INTEGER NOT NULL DEFAULT 0)
            WITHOUT ROWID;
        INSERT INTO queues VALUES ('q', 0);
        CREATE TABLE messages (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, status INTEGER NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            settled_at REAL NOT NULL DEFAULT 0, size INTEGER NOT NULL, content BLOB NOT NULL,
            body_ref INTEGER);
        CREATE INDEX messages_by_queue ON messages (queue, status, id);
        CREATE INDEX messages_settled ON messages (status, settled_at) WHERE status >= 2;""",
    "lean": """
        CREATE TABLE queues (name TEXT PRIMARY KEY, processed INTEGER NOT NULL DEFAULT 0)
            WITHOUT ROWID;
        INSERT INTO queues VALUES ('q', 0);
        CREATE TABLE messages (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, status INTEGER NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            settled_at REAL NOT NULL DEFAULT 0, size INTEGER NOT NULL, content BLOB NOT NULL,
            body_ref INTEGER);
        CREATE INDEX messages_by_queue ON messages (queue, status, id);""",
    "partial": """
        CREATE TABLE queues (name TEXT PRIMARY KEY, processed INTEGER NOT NULL DEFAULT 0)
            WITHOUT ROWID;
        INSERT INTO queues VALUES ('q', 0);
        CREATE TABLE messages (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, status INTEGER NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            settled_at REAL NOT NULL DEFAULT 0, size INTEGER NOT NULL, content BLOB NOT NULL,
            body_ref INTEGER);
        CREATE INDEX messages_ready ON messages (queue, id) WHERE status = 0;
        CREATE INDEX messages_processed ON messages (queue, id) WHERE status = 2;
        CREATE INDEX messages_failed ON messages (queue, id) WHERE status = 3;""",
}

STATEMENTS: dict[str, tuple[str, ...]] = {
    "row": (
        "INSERT INTO messages (id, queue, status, created_at, size, content)"
        " VALUES (:n, 'q', 0, :at, :size, :body)",
        "UPDATE messages SET status = 2, settled_at = :at, attempt = 1 WHERE id = :n - 1",
    ),
    "split": (
        "INSERT INTO bodies (id, content) VALUES (:n, :body)",
        "INSERT INTO messages (id, queue, status, created_at, size) VALUES (:n, 1, 0, :at, :size)",
        "UPDATE messages SET status = 2, settled_at = :at, attempt = 1 WHERE id = :n - 1",
    ),
    "append": (
        "INSERT INTO messages (id, queue, created_at, size, content)"
        " VALUES (:n, 1, :at, :size, :body)",
        "INSERT INTO events (message, kind, at) SELECT :n - 1, 2, :at WHERE :n > 1",
    ),
    "log": (
        "INSERT INTO log (kind, message, at, data) VALUES (0, :n, :at, :body)",
        "INSERT INTO log (kind, message, at) SELECT 2, :n - 1, :at WHERE :n > 1",
    ),
    "segments": (
        "INSERT INTO messages (id, queue, status, created_at, size, content, body_ref)"
        " VALUES (:n, 'q', 0, :at, :size, x'', :n * 1040)",
        "UPDATE messages SET status = 2, settled_at = :at, attempt = 1 WHERE id = :n - 1",
        "UPDATE queues SET processed = processed + 1 WHERE name = 'q' AND :n > 1",
    ),
    "lean": (
        "INSERT INTO messages (id, queue, status, created_at, size, content, body_ref)"
        " VALUES (:n, 'q', 0, :at, :size, x'', :n * 1040)",
        "UPDATE messages SET status = 2, settled_at = :at, attempt = 1 WHERE id = :n - 1",
    ),
    "partial": (
        "INSERT INTO messages (id, queue, status, created_at, size, content, body_ref)"
        " VALUES (:n, 'q', 1, :at, :size, x'', :n * 1040)",
        "UPDATE messages SET status = 2, settled_at = :at, attempt = 1 WHERE id = :n - 1",
    ),
}
APPENDS_BODY = {"segments", "lean", "partial"}
"""Schemas whose body goes to a file beside the database, written before the commit."""
"""Each transaction: message ``n``'s publish, then message ``n - 1``'s ack."""


def _written() -> int:
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("write_bytes"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def measure(schema: str, page_size: int, synchronous: str, seconds: int) -> dict[str, Any]:
    """KiB written per message by ``seconds`` of 1,000 commits/s on a fresh database."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "floor.db"
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA page_size={page_size}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute(f"PRAGMA wal_autocheckpoint={32 * 1024 * 1024 // page_size}")
        db.executescript(SCHEMAS[schema])
        stop = threading.Event()

        def checkpoint() -> None:
            other = sqlite3.connect(path, isolation_level=None)
            while not stop.wait(0.1):
                other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            other.close()

        thread = threading.Thread(target=checkpoint)
        thread.start()
        segment = os.open(Path(folder) / "segment", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        body = b"x" * 1024
        count = 1000 * seconds
        before = _written()
        started = time.perf_counter()
        for n in range(1, count + 1):
            params = {"n": n, "at": time.time(), "size": len(body), "body": body}
            if schema in APPENDS_BODY:
                os.write(segment, b"h" * 16 + body)
                if synchronous == "FULL":
                    os.fdatasync(segment)
            db.execute("BEGIN")
            for statement in STATEMENTS[schema]:
                db.execute(statement, params)
            db.execute("COMMIT")
            wait = started + n / 1000 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
        written = _written() - before
        os.close(segment)
        db.close()
    return {
        "schema": schema,
        "page_size": page_size,
        "synchronous": synchronous,
        "kib_per_message": written / 1024 / count,
        "messages_per_s": count / elapsed,
    }


def main() -> None:
    """Measure every schema at each page size and synchronous mode; print and save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=positive_int, default=5, help="seconds per case")
    parser.add_argument("--page-sizes", type=positive_int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--synchronous", nargs="+", default=["NORMAL", "FULL"])
    parser.add_argument("--schemas", nargs="+", default=list(SCHEMAS), choices=list(SCHEMAS))
    args = parser.parse_args()
    rows = []
    print("| schema | page | synchronous | KiB per message | msg/s |\n|---|---:|---|---:|---:|")
    for schema in args.schemas:
        for page_size in args.page_sizes:
            for synchronous in args.synchronous:
                row = measure(schema, page_size, synchronous, args.seconds)
                rows.append(row)
                print(
                    f"| {schema} | {page_size} | {synchronous} | {row['kib_per_message']:.2f}"
                    f" | {row['messages_per_s']:,.0f} |",
                    flush=True,
                )
    name = "wal_floor" if args.schemas == list(SCHEMAS) else "wal_floor_" + "_".join(args.schemas)
    save(name, {"rows": rows})


if __name__ == "__main__":
    main()

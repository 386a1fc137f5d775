"""The SQLite schema's version: created on a new file, checked on an old one.

The version lives in ``PRAGMA user_version`` (0: a new, empty file).
Version 1 is ``schema.sql``; a later version adds its ordered step here.
"""

from __future__ import annotations

import sqlite3
from importlib import resources
from typing import TYPE_CHECKING

from ..errors import StorageCorrupt

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["SCHEMA_VERSION", "check_database", "migrate"]

SCHEMA_VERSION = 1


def check_database(path: Path) -> None:
    """Fail fast, before serving, when ``path`` exists but is no usable database.

    Raises:
        StorageCorrupt: with a one-line reason.
    """
    if not path.exists():
        return
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = connection.execute("PRAGMA quick_check").fetchone()
            version = connection.execute("PRAGMA user_version").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise StorageCorrupt(str(path), str(exc)) from None
    if row is None or row[0] != "ok":
        raise StorageCorrupt(str(path), f"integrity check says {row}")
    if version not in (0, SCHEMA_VERSION):
        raise StorageCorrupt(str(path), f"unknown schema version {version}")


def migrate(db: sqlite3.Connection, where: str) -> None:
    """Check the file, then create the schema on a new one (the writer's connection).

    Raises:
        StorageCorrupt: the file fails its check or has an unknown schema version.
    """
    check = db.execute("PRAGMA quick_check").fetchone()
    if check is None or check[0] != "ok":
        raise StorageCorrupt(where, f"integrity check says {check}")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        db.executescript(resources.files(__package__).joinpath("schema.sql").read_text())
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    elif version != SCHEMA_VERSION:
        raise StorageCorrupt(where, f"unknown schema version {version}")

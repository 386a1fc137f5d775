"""``broker backup DEST``: a consistent copy of a running broker's SQLite data dir.

It runs on the broker's host, beside it, and needs no lock the broker holds:
the database is copied with SQLite's online backup API through a read-only
connection (`storage.sqlite.backup`) while the broker keeps serving, and the
secrets a restored broker needs are copied as files: ``jwt.secret`` (without
it every token and refresh token issued would be refused) and the
self-signed TLS pair in ``tls/``. ``DEST`` becomes a data dir of its own:
``broker serve --data-dir DEST`` starts on it.

Why not an admin route that streams the copy: whoever held an admin token
would then be handed the JWT signing key, with which tokens for any user can
be minted long after that admin token is revoked, and the copy would be
pumped through the event loop that serves publishes. A broker on another
host is backed up on that host (``ssh host broker backup ...``);
PostgreSQL data is ``pg_dump``'s job.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from broker_core.settings import Settings

__all__ = ["add_backup", "backup_data_dir"]

_SECRETS = ("jwt.secret", "tls/cert.pem", "tls/key.pem")
"""Files of the data dir a restored broker needs besides the database, when present."""


def add_backup(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``broker backup DEST``."""
    backup = commands.add_parser(
        "backup", help="copy a running broker's SQLite data to DEST (a new data dir)"
    )
    backup.add_argument("dest", type=Path, help="the directory to create")
    backup.add_argument(
        "--data-dir",
        type=Path,
        help="the broker's data dir (BROKER_DATA_DIR; default: broker-data)",
    )
    backup.add_argument(
        "--storage",
        dest="storage_url",
        help="storage URL (BROKER_STORAGE_URL; default: SQLite in the data dir)",
    )
    backup.add_argument(
        "--force", action="store_true", help="replace DEST if it exists (default: refuse)"
    )
    backup.set_defaults(handler=_backup)


def _backup(args: argparse.Namespace) -> int:
    from storage import StorageError

    from .cli import settings_from_args

    settings = settings_from_args(args, ("data_dir", "storage_url"))
    if settings is None:
        return 2
    try:
        highest = backup_data_dir(settings, args.dest, force=args.force)
    except (OSError, StorageError, ValueError) as exc:
        print(f"broker: backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup written to {args.dest} (last message id {highest})", flush=True)
    return 0


def backup_data_dir(settings: Settings, dest: Path, *, force: bool = False) -> int:
    """Copy the broker's database and secrets into the new data dir ``dest``; its last id.

    Everything is written into a private directory beside ``dest`` and fsynced,
    then renamed to ``dest``: an interrupted backup leaves no half-made ``dest``.

    Raises:
        ValueError: the storage is PostgreSQL.
        FileExistsError: ``dest`` exists and ``force`` is off.
        FileNotFoundError: there is no database.
        storage.StorageCorrupt: the database can't be read or the copy fails its check.
    """
    from storage import sqlite_database
    from storage.sqlite.backup import backup_database

    database = sqlite_database(settings)
    if database is None:
        raise ValueError("broker backup copies SQLite data: back up PostgreSQL with pg_dump")
    dest = dest.expanduser().absolute()
    if dest.exists() and not force:
        raise FileExistsError(f"{dest} exists: pass --force to replace it")
    staging = dest.with_name(f".{dest.name}.backup-{secrets.token_hex(4)}")
    staging.mkdir(mode=0o700, parents=False)
    try:
        staging.chmod(0o700)
        highest = backup_database(database, staging / "broker.db")
        data_dir = settings.data_dir.expanduser().absolute()
        for name in _SECRETS:
            source = data_dir / name
            if source.is_file():
                _copy_private(source, staging / name)
        _fsync(staging)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.replaced-{secrets.token_hex(4)}")
            dest.rename(old)
            staging.rename(dest)
            shutil.rmtree(old)
        else:
            staging.rename(dest)
        _fsync(dest.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return highest


def _copy_private(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` readable by its owner only, fsynced."""
    if not target.parent.exists():
        target.parent.mkdir()
        target.parent.chmod(0o700)
    data = memoryview(source.read_bytes())
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync(target.parent)


def _fsync(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

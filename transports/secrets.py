"""Secrets kept in the data directory: created once, private to the broker's user.

The JWT signing key (when ``BROKER_JWT_SECRET`` is unset) and other generated
secrets live in small files next to the database. They are created atomically
with mode 0600, so a crash never leaves a half-written secret and no other
local user can read one, and two processes starting at once agree on one value.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["ensure_data_dir", "generate_password", "generate_secret", "load_or_create_secret"]

_PRIVATE_FILE = 0o600
_PRIVATE_DIR = 0o700


def ensure_data_dir(path: Path) -> Path:
    """Create the data directory, private to the current user, if it is missing.

    An existing directory keeps its mode: an operator who shares it on
    purpose keeps that choice, while the secrets inside stay 0600.

    Args:
        path: The data directory (``Settings.data_dir``).

    Returns:
        The directory as an absolute path.
    """
    path = path.expanduser().absolute()
    try:
        path.mkdir(parents=True, mode=_PRIVATE_DIR)
    except FileExistsError:
        if not path.is_dir():
            raise NotADirectoryError(
                f"data dir {str(path)!r} exists and is not a directory"
            ) from None
    else:
        # mkdir's mode is filtered by the umask; set it exactly.
        path.chmod(_PRIVATE_DIR)
    return path


def _tighten(path: Path) -> None:
    """Make an existing secret file readable by its owner only."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(_PRIVATE_FILE)


def load_or_create_secret(path: Path, nbytes: int = 32) -> str:
    """Return the secret stored at ``path``, creating it on first use.

    A new secret is ``secrets.token_urlsafe(nbytes)``, written to a private
    temporary file, flushed, then linked into place, so readers only ever see
    a complete file and a concurrent creator's value wins consistently. An
    existing file readable by others is narrowed to 0600.

    Args:
        path: The secret file, e.g. ``data_dir / "jwt-secret"``.
        nbytes: Random bytes in a new secret.

    Returns:
        The secret, without surrounding whitespace.

    Raises:
        ValueError: The file exists but is empty.
    """
    if path.exists():
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate_secret(nbytes)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE)
    try:
        try:
            # The umask may have removed bits; 0600 is what we promise.
            os.fchmod(fd, _PRIVATE_FILE)
            os.write(fd, (value + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails if the name exists, unlike rename(): the first
            # creator wins and everyone reads its value.
            os.link(tmp, path)
        except FileExistsError:
            return _read_secret(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return value


def _read_secret(path: Path) -> str:
    _tighten(path)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ValueError(f"secret file {str(path)!r} is empty; delete it to generate a new one")
    return value


def _fsync_dir(path: Path) -> None:
    """Persist a directory entry so a new file survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_secret(nbytes: int = 32) -> str:
    """A new random secret of ``nbytes`` bytes, URL-safe text (a JWT signing key)."""
    return secrets.token_urlsafe(nbytes)


def generate_password() -> str:
    """Return a random password for the first admin (24 URL-safe characters, 144 bits)."""
    return secrets.token_urlsafe(18)

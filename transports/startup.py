"""What `broker serve` takes before anything else: the data dir's lock, then the listening port.

One broker process per data dir (DESIGN.md, "Trust"): two processes on one
SQLite database would both recover it, deliver and ack the same messages
and hand out colliding ids. `lock_data_dir` takes an exclusive ``flock`` on
``broker.lock`` in the data dir before the database, a secret or a log file
is touched, and writes the holder's pid into it for the next one's error
message. The kernel releases the lock when the process ends, ``kill -9``
included, so a restart after a crash is never refused.

The port is bound next (`bind_socket`), before the database is opened, the
first admin created or its password printed: a start that can't listen
exits with nothing changed on disk but the lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "LOCK_FILE",
    "CannotListen",
    "DataDirInUse",
    "DataDirLock",
    "StartError",
    "bind_socket",
    "lock_data_dir",
]

LOCK_FILE = "broker.lock"
"""The file, in the data dir, that the serving broker holds locked (its pid inside)."""
_PID_WAIT_S = 0.5
"""How long to wait for a holder that has just taken the lock to write its pid."""


class StartError(Exception):
    """The broker can't start; the message says why in one line."""


class DataDirInUse(StartError):
    """Another live process holds the data dir ``path`` (its pid, when it wrote it)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"data dir {path} is in use ({holder})")


class CannotListen(StartError):
    """The address ``host:port`` can't be bound (taken, not local, not permitted)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


class DataDirLock:
    """The held lock of a data dir; `release` it (or let the process end) to free the dir."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path

    def release(self) -> None:
        """Unlock and close (the file stays: deleting it would race the next holder)."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def lock_data_dir(data_dir: Path, name: str = LOCK_FILE) -> DataDirLock:
    """Take the data dir's lock for this process, or fail at once if another process holds it.

    Creates the lock file (mode 0600) if needed and, once locked, writes
    this process's pid into it: the only change made before the port is
    bound. The lock lives as long as the returned object's file descriptor
    (the process's life, for ``broker serve``).

    Args:
        data_dir: the broker's data dir (it must exist).
        name: the lock file's name in it.

    Raises:
        DataDirInUse: another process holds it (the message names its pid).
    """
    path = data_dir / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            pid = _holder_pid(fd)
        finally:
            os.close(fd)
        raise DataDirInUse(data_dir, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return DataDirLock(fd, path)


def _holder_pid(fd: int) -> int | None:
    """The pid the holder wrote, waiting briefly for one that has just locked to write it."""
    deadline = time.monotonic() + _PID_WAIT_S
    while True:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        with contextlib.suppress(ValueError):
            return int(text)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, for uvicorn to serve on.

    It listens at once, so the port is claimed (two sockets with
    ``SO_REUSEADDR`` may both bind while neither listens); connections made
    before the broker serves wait in the backlog.

    Raises:
        CannotListen: the address is taken or can't be bound here.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only then.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise CannotListen(host, port, exc.strerror or str(exc)) from None
    return sock

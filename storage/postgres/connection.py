"""Connecting to PostgreSQL: sessions' names and timeouts, URLs fit for logs, one-line errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ..errors import StorageUnavailable

__all__ = [
    "APPLICATION",
    "CONNECT_TIMEOUT_S",
    "LISTEN_APPLICATION",
    "connect",
    "create_pool",
    "display_url",
    "permanent_error",
    "reason",
    "row_count",
]

APPLICATION = "wsbroker"
LISTEN_APPLICATION = "wsbroker listener"
"""``application_name`` of the pool's sessions and of the listener's (``pg_stat_activity``)."""
CONNECT_TIMEOUT_S = 10.0
_COMMAND_TIMEOUT_S = 60.0


def display_url(url: str) -> str:
    """``url`` without its password or query (fit for logs and error messages)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


class _Session(asyncpg.Connection):  # type: ignore[misc]
    """A pool session given back as it is: no reset statement at each release.

    asyncpg resets a released session with ``pg_advisory_unlock_all(); CLOSE
    ALL; UNLISTEN *; RESET ALL`` (one more round trip per acquire: two per
    message at 1,000 msg/s). The pool's sessions never take session advisory
    locks, ``LISTEN`` (the listener has its own session), ``SET`` or leave a
    cursor open outside a transaction; an open transaction is still rolled
    back by asyncpg itself.
    """

    def get_reset_query(self) -> str:
        return ""


async def create_pool(url: str, size: int) -> Any:
    """A pool of up to ``size`` sessions (an ``asyncpg.Pool``)."""
    return await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=_COMMAND_TIMEOUT_S,
        server_settings={"application_name": APPLICATION},
        connection_class=_Session,
    )


async def connect(url: str, application: str) -> Any:
    """One session of its own (an ``asyncpg.Connection``) named ``application``."""
    return await asyncpg.connect(
        url, timeout=CONNECT_TIMEOUT_S, server_settings={"application_name": application}
    )


def reason(exc: BaseException) -> str:
    """A one-line reason for an error (asyncpg's messages may span lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def row_count(status: str) -> int:
    """The row count of a command status such as ``"UPDATE 3"``."""
    return int(status.rpartition(" ")[2] or 0)


_TRANSIENT = (
    OSError,  # the connection, and `cluster.NodeEvicted` (the node rejoins)
    TimeoutError,
    StorageUnavailable,
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.TransactionRollbackError,  # class 40: serialization failure, deadlock
    asyncpg.InsufficientResourcesError,  # class 53: disk full, out of memory, connections
    asyncpg.ObjectNotInPrerequisiteStateError,  # class 55: lock not available, object in use
    asyncpg.OperatorInterventionError,  # class 57: shutdown, cancelled, cannot connect now
    asyncpg.PostgresSystemError,  # class 58: I/O error
)
"""Failures that may clear: the batch is retried until it commits."""


def permanent_error(exc: Exception) -> bool:
    """Whether a commit failed for a reason retrying the same batch can't fix.

    Connection losses, a full disk, deadlocks and shutdowns may clear; a
    violated constraint, data the server or the driver refuses, or a bug
    fails the same way every time.
    """
    if isinstance(exc, asyncpg.InterfaceError):
        # The driver's DataError is a value it can't encode; the rest is the connection's state.
        return isinstance(exc, ValueError)
    return not isinstance(exc, _TRANSIENT)

"""`PostgresAccountStore`: users, refresh and service tokens in PostgreSQL, shared by every node.

A change of a user is told to every node (``NOTIFY``, `storage.postgres.cluster`)
in the transaction that makes it, so that each node's cache of users follows.
Writes run each in a transaction of their own, after the message operations
buffered before them, and never inside a batch's: a batch that rolls back
can't take a revocation with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker_core.service_tokens import PRINCIPAL_PREFIX

from .cluster import CHANNEL, encode_change, notify
from .connection import row_count

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..accounts import RefreshRow

__all__ = ["PostgresAccountStore"]


class PostgresAccountStore:
    """The `storage.accounts.AccountStore` of a `PostgresStorage`.

    Args:
        pool: returns the storage's connection pool (open() first).
        before_write: waits for the buffered writes and refuses a write
            while this node is presumed dead (raises `StorageUnavailable`).
    """

    def __init__(
        self, pool: Callable[[], Any], before_write: Callable[[], Awaitable[None]]
    ) -> None:
        self._pool = pool
        self._before_write = before_write

    async def get_user(self, username: str) -> bytes | None:
        """A user's stored document, or ``None``."""
        document = await self._pool().fetchval(
            "SELECT document FROM broker_users WHERE username = $1", username
        )
        return bytes(document) if document is not None else None

    async def list_users(self) -> list[bytes]:
        """Every user's document, by username."""
        rows = await self._pool().fetch("SELECT document FROM broker_users ORDER BY username")
        return [bytes(row[0]) for row in rows]

    async def put_user(self, username: str, document: bytes) -> None:
        """Create or replace a user (every node is told)."""
        await self._direct(
            "WITH put AS (INSERT INTO broker_users (username, document) VALUES ($1, $2) "
            "ON CONFLICT (username) DO UPDATE SET document = excluded.document) "
            f"SELECT pg_notify('{CHANNEL}', $3)",
            username,
            document,
            encode_change("u", username),
        )

    async def delete_user(self, username: str) -> bool:
        """Delete a user and revoke its refresh tokens; return whether it existed."""
        await self.revoke_user_tokens(username)
        async with self._pool().acquire() as conn, conn.transaction():
            deleted = row_count(
                await conn.execute("DELETE FROM broker_users WHERE username = $1", username)
            )
            await notify(conn, [encode_change("u", username)])
        return deleted > 0

    async def put_refresh(self, jti: str, family: str, username: str, expires_at: float) -> None:
        """Remember an issued refresh token."""
        await self._direct(
            "INSERT INTO broker_refresh_tokens (jti, family, username, expires_at) "
            "VALUES ($1, $2, $3, $4)",
            jti,
            family,
            username,
            expires_at,
        )

    async def get_refresh(self, jti: str) -> RefreshRow | None:
        """``(family, username, expires_at, revoked)`` of a refresh token, or ``None``."""
        row = await self._pool().fetchrow(
            "SELECT family, username, expires_at, revoked FROM broker_refresh_tokens "
            "WHERE jti = $1",
            jti,
        )
        return (row[0], row[1], row[2], bool(row[3])) if row is not None else None

    async def revoke_refresh(self, jti: str) -> bool:
        """Revoke one refresh token; return whether it was active (the rotation's check-and-set)."""
        return (
            await self._direct(
                "UPDATE broker_refresh_tokens SET revoked = true WHERE jti = $1 AND NOT revoked",
                jti,
            )
            > 0
        )

    async def revoke_family(self, family: str) -> None:
        """Revoke every refresh token of a family (reuse of a revoked one was detected)."""
        await self._direct(
            "UPDATE broker_refresh_tokens SET revoked = true WHERE family = $1", family
        )

    async def revoke_user_tokens(self, username: str) -> None:
        """Revoke every refresh token of a user (password changed, user deleted)."""
        await self._direct(
            "UPDATE broker_refresh_tokens SET revoked = true WHERE username = $1", username
        )

    async def get_service_token(self, id: str) -> bytes | None:
        """A service token's stored document, or ``None``."""
        document = await self._pool().fetchval(
            "SELECT document FROM broker_service_tokens WHERE id = $1", id
        )
        return bytes(document) if document is not None else None

    async def list_service_tokens(self) -> list[bytes]:
        """Every service token's document, by id."""
        rows = await self._pool().fetch("SELECT document FROM broker_service_tokens ORDER BY id")
        return [bytes(row[0]) for row in rows]

    async def put_service_token(self, id: str, document: bytes) -> None:
        """Create a service token (every node is told, as of its principal's change)."""
        await self._direct(
            "WITH put AS (INSERT INTO broker_service_tokens (id, document) VALUES ($1, $2)) "
            f"SELECT pg_notify('{CHANNEL}', $3)",
            id,
            document,
            encode_change("u", PRINCIPAL_PREFIX + id),
        )

    async def delete_service_token(self, id: str) -> bool:
        """Delete (revoke) a service token; every node is told and drops it at once."""
        await self._before_write()
        async with self._pool().acquire() as conn, conn.transaction():
            deleted = row_count(
                await conn.execute("DELETE FROM broker_service_tokens WHERE id = $1", id)
            )
            await notify(conn, [encode_change("u", PRINCIPAL_PREFIX + id)])
        return deleted > 0

    async def _direct(self, sql: str, *args: Any) -> int:
        """Run one statement in its own transaction, ordered after the buffered writes."""
        await self._before_write()
        return row_count(await self._pool().execute(sql, *args))

"""`SQLiteAccountStore`: users and refresh tokens in the SQLite file.

Tables ``users``, ``refresh_tokens`` and ``service_tokens``. Writes run in the writer thread
(`storage.sqlite.writer`) after the message operations buffered before
them; reads go through the read-only connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiosqlite

    from ..accounts import RefreshRow
    from .writer import SQLiteWriter

__all__ = ["SQLiteAccountStore"]


class SQLiteAccountStore:
    """The `storage.accounts.AccountStore` of a `SQLiteStorage`.

    Args:
        writer: the storage's writer thread.
        reader: returns the storage's read-only connection (open() first).
    """

    def __init__(self, writer: SQLiteWriter, reader: Callable[[], aiosqlite.Connection]) -> None:
        self._writer = writer
        self._reader = reader

    async def get_user(self, username: str) -> bytes | None:
        """A user's stored document, or ``None``."""
        async with self._reader().execute(
            "SELECT document FROM users WHERE username = ?", (username,)
        ) as cursor:
            row = await cursor.fetchone()
        return bytes(row[0]) if row else None

    async def list_users(self) -> list[bytes]:
        """Every user's document, by username."""
        async with self._reader().execute("SELECT document FROM users ORDER BY username") as cursor:
            return [bytes(row[0]) for row in await cursor.fetchall()]

    async def put_user(self, username: str, document: bytes) -> None:
        """Create or replace a user."""
        await self._direct(
            "INSERT OR REPLACE INTO users (username, document) VALUES (?, ?)",
            (username, document),
        )

    async def delete_user(self, username: str) -> bool:
        """Delete a user and revoke its refresh tokens; return whether it existed."""
        await self._direct("UPDATE refresh_tokens SET revoked = 1 WHERE username = ?", (username,))
        return await self._direct("DELETE FROM users WHERE username = ?", (username,)) > 0

    async def put_refresh(self, jti: str, family: str, username: str, expires_at: float) -> None:
        """Remember an issued refresh token."""
        await self._direct(
            "INSERT INTO refresh_tokens (jti, family, username, expires_at) VALUES (?, ?, ?, ?)",
            (jti, family, username, expires_at),
        )

    async def get_refresh(self, jti: str) -> RefreshRow | None:
        """``(family, username, expires_at, revoked)`` of a refresh token, or ``None``."""
        async with self._reader().execute(
            "SELECT family, username, expires_at, revoked FROM refresh_tokens WHERE jti = ?",
            (jti,),
        ) as cursor:
            row = await cursor.fetchone()
        return (row[0], row[1], row[2], bool(row[3])) if row else None

    async def revoke_refresh(self, jti: str) -> bool:
        """Revoke one refresh token; return whether it was active (the rotation's check-and-set)."""
        return (
            await self._direct(
                "UPDATE refresh_tokens SET revoked = 1 WHERE jti = ? AND revoked = 0", (jti,)
            )
            > 0
        )

    async def revoke_family(self, family: str) -> None:
        """Revoke every refresh token of a family (reuse of a revoked one was detected)."""
        await self._direct("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?", (family,))

    async def revoke_user_tokens(self, username: str) -> None:
        """Revoke every refresh token of a user (password changed, user deleted)."""
        await self._direct("UPDATE refresh_tokens SET revoked = 1 WHERE username = ?", (username,))

    async def get_service_token(self, id: str) -> bytes | None:
        """A service token's stored document, or ``None``."""
        async with self._reader().execute(
            "SELECT document FROM service_tokens WHERE id = ?", (id,)
        ) as cursor:
            row = await cursor.fetchone()
        return bytes(row[0]) if row else None

    async def list_service_tokens(self) -> list[bytes]:
        """Every service token's document, by id."""
        async with self._reader().execute(
            "SELECT document FROM service_tokens ORDER BY id"
        ) as cursor:
            return [bytes(row[0]) for row in await cursor.fetchall()]

    async def put_service_token(self, id: str, document: bytes) -> None:
        """Create a service token."""
        await self._direct(
            "INSERT INTO service_tokens (id, document) VALUES (?, ?)", (id, document)
        )

    async def delete_service_token(self, id: str) -> bool:
        """Delete (revoke) a service token; return whether it existed."""
        return await self._direct("DELETE FROM service_tokens WHERE id = ?", (id,)) > 0

    async def _direct(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one statement in the writer thread, after the operations buffered before it."""
        await self._writer.flush()
        return await self._writer.call(lambda db: max(db.execute(sql, params).rowcount, 0))

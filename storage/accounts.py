"""`AccountStore`: where a broker keeps its users, refresh tokens and service tokens.

Users and refresh tokens live in the same database as the messages (one
file to back up, one server to run), but they are no journal: they are
written directly, one statement at a time, ordered after the message
operations buffered before them. Each backend's store implements this
protocol (`storage.sqlite.accounts`, `storage.postgres.accounts`), reached as
`StorageBackend.accounts`; ``transports.accounts.Accounts`` uses it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["AccountStore", "RefreshRow"]

RefreshRow = tuple[str, str, float, bool]
"""``(family, username, expires_at, revoked)`` of a refresh token."""


class AccountStore(Protocol):
    """Users (stored documents, by username) and issued refresh tokens."""

    async def get_user(self, username: str) -> bytes | None:
        """A user's stored document, or ``None``."""
        ...

    async def list_users(self) -> list[bytes]:
        """Every user's document, by username."""
        ...

    async def put_user(self, username: str, document: bytes) -> None:
        """Create or replace a user."""
        ...

    async def delete_user(self, username: str) -> bool:
        """Delete a user and revoke its refresh tokens; return whether it existed."""
        ...

    async def put_refresh(self, jti: str, family: str, username: str, expires_at: float) -> None:
        """Remember an issued refresh token."""
        ...

    async def get_refresh(self, jti: str) -> RefreshRow | None:
        """``(family, username, expires_at, revoked)`` of a refresh token, or ``None``."""
        ...

    async def revoke_refresh(self, jti: str) -> bool:
        """Revoke one refresh token; return whether it was active (the rotation's check-and-set)."""
        ...

    async def revoke_family(self, family: str) -> None:
        """Revoke every refresh token of a family."""
        ...

    async def revoke_user_tokens(self, username: str) -> None:
        """Revoke every refresh token of a user."""
        ...

    async def get_service_token(self, id: str) -> bytes | None:
        """A service token's stored document (`broker_core.service_tokens`), or ``None``."""
        ...

    async def list_service_tokens(self) -> list[bytes]:
        """Every service token's document, by id."""
        ...

    async def put_service_token(self, id: str, document: bytes) -> None:
        """Create a service token (on shared storage every node is told, as of a user change)."""
        ...

    async def delete_service_token(self, id: str) -> bool:
        """Delete (revoke) a service token; return whether it existed."""
        ...

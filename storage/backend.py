"""`StorageBackend`: what every storage backend offers beyond the core's `Storage` protocol.

The core needs `broker_core.journal.Storage`; the transports also keep users
and refresh tokens in the same database and report the backend's name, size
and commit counters. `SQLiteStorage` and `PostgresStorage` both satisfy this
protocol, and `storage.storage_from_settings` returns it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from broker_core.journal import Storage

if TYPE_CHECKING:
    from .commit_health import BatchStats

__all__ = ["RefreshRow", "StorageBackend"]

RefreshRow = tuple[str, str, float, bool]
"""``(family, username, expires_at, revoked)`` of a refresh token."""


class StorageBackend(Storage, Protocol):
    """The whole storage of a broker: the journal, replay and reads, users and refresh tokens."""

    @property
    def name(self) -> str:
        """The backend's name for ``/stats`` (``"sqlite"``, ``"postgres"``)."""
        ...

    @property
    def batch_stats(self) -> BatchStats:
        """Commit counters (batches, ops, seconds, failures)."""
        ...

    def size_bytes(self) -> int:
        """Bytes the broker's data takes in storage (cheap: may be a few seconds old)."""
        ...

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

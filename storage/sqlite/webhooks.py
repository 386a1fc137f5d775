"""`SQLiteWebhookStore`: webhooks in the SQLite file (table ``webhooks``, migration 3).

Writes run in the writer thread after the message operations buffered
before them; reads go through the read-only connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    import aiosqlite

    from .writer import SQLiteWriter

__all__ = ["SQLiteWebhookStore", "create_webhooks_table"]


def create_webhooks_table(db: sqlite3.Connection) -> None:
    """Migration step: the ``webhooks`` table (self-contained, renumbered at merge)."""
    db.execute(
        "CREATE TABLE webhooks (id TEXT PRIMARY KEY, queue TEXT NOT NULL, document BLOB NOT NULL)"
        " WITHOUT ROWID"
    )


class SQLiteWebhookStore:
    """The `storage.webhooks.WebhookStore` of a `SQLiteStorage`."""

    def __init__(self, writer: SQLiteWriter, reader: Callable[[], aiosqlite.Connection]) -> None:
        self._writer = writer
        self._reader = reader

    async def list_webhooks(self) -> list[bytes]:
        """Every webhook's document, by id."""
        async with self._reader().execute("SELECT document FROM webhooks ORDER BY id") as cursor:
            return [bytes(row[0]) for row in await cursor.fetchall()]

    async def put_webhook(self, id: str, queue: str, document: bytes) -> None:
        """Create or replace a webhook."""
        await self._direct(
            "INSERT OR REPLACE INTO webhooks (id, queue, document) VALUES (?, ?, ?)",
            (id, queue, document),
        )

    async def delete_webhook(self, id: str) -> bool:
        """Delete a webhook; return whether it existed."""
        return await self._direct("DELETE FROM webhooks WHERE id = ?", (id,)) > 0

    async def _direct(self, sql: str, params: tuple[Any, ...]) -> int:
        await self._writer.flush()
        return await self._writer.call(lambda db: max(db.execute(sql, params).rowcount, 0))

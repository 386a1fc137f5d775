"""`PostgresWebhookStore`: webhooks in PostgreSQL (``broker_webhooks``, schema 4), shared by nodes.

Every node runs every webhook as a consumer of its queue; the claims of the
shared queue keep two nodes from posting one message at once. Nodes follow
changes by re-reading this small table (`transports.webhooks.Webhooks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .connection import row_count

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["PostgresWebhookStore"]


class PostgresWebhookStore:
    """The `storage.webhooks.WebhookStore` of a `PostgresStorage`."""

    def __init__(
        self, pool: Callable[[], Any], before_write: Callable[[], Awaitable[None]]
    ) -> None:
        self._pool = pool
        self._before_write = before_write

    async def list_webhooks(self) -> list[bytes]:
        """Every webhook's document, by id."""
        rows = await self._pool().fetch("SELECT document FROM broker_webhooks ORDER BY id")
        return [bytes(row[0]) for row in rows]

    async def put_webhook(self, id: str, queue: str, document: bytes) -> None:
        """Create or replace a webhook."""
        await self._before_write()
        await self._pool().execute(
            "INSERT INTO broker_webhooks (id, queue, document) VALUES ($1, $2, $3) "
            "ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, document = excluded.document",
            id,
            queue,
            document,
        )

    async def delete_webhook(self, id: str) -> bool:
        """Delete a webhook; return whether it existed."""
        await self._before_write()
        return (
            row_count(await self._pool().execute("DELETE FROM broker_webhooks WHERE id = $1", id))
            > 0
        )

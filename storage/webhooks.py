"""`WebhookStore`: where a backend keeps webhooks (one JSON document per webhook).

The document is `broker_core.webhooks.WebhookRecord`, its secret included:
the broker signs with it, so it cannot be stored as a hash. It is kept like
the other server secrets (the JWT key of a PostgreSQL cluster is a row of
the same database): readable by whoever reads the database, never logged,
never listed by the API.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["WebhookStore"]


class WebhookStore(Protocol):
    """Webhook documents by id, with their queue."""

    async def list_webhooks(self) -> list[bytes]:
        """Every webhook's document, by id."""
        ...

    async def put_webhook(self, id: str, queue: str, document: bytes) -> None:
        """Create or replace a webhook."""
        ...

    async def delete_webhook(self, id: str) -> bool:
        """Delete a webhook; return whether it existed."""
        ...

"""`PostgresTopicStore`: topics and their bindings in PostgreSQL, shared by every node.

Tables ``broker_topics`` and ``broker_topic_bindings`` (``schema_4.sql``).
Each change of a topic's bindings moves its ``version`` in the same
transaction; every node reads the version before it routes a publish
(`broker_core.topic_registry.Topics`), so a binding is in force on every node
as soon as its ``201`` is sent. Writes wait for the message operations
buffered before them, like the account store's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker_core.topic_registry import StoredBinding, StoredTopic

from .connection import row_count

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["PostgresTopicStore"]


class PostgresTopicStore:
    """The `broker_core.topic_registry.TopicStore` of a `PostgresStorage`.

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

    async def load_topics(self) -> list[StoredTopic]:
        """Every topic with its bindings."""
        async with self._pool().acquire() as conn, conn.transaction(isolation="repeatable_read"):
            heads = await conn.fetch("SELECT name, created_at, version FROM broker_topics")
            rows = await conn.fetch(
                "SELECT topic, queue, pattern, created_at FROM broker_topic_bindings"
            )
        bindings: dict[str, list[StoredBinding]] = {}
        for topic, queue, pattern, at in rows:
            bindings.setdefault(topic, []).append(StoredBinding(queue, pattern, at))
        return [
            StoredTopic(name, created_at, version, bindings.get(name, []))
            for name, created_at, version in heads
        ]

    async def load_topic(self, name: str) -> StoredTopic | None:
        """One topic with its bindings, or ``None``."""
        async with self._pool().acquire() as conn, conn.transaction(isolation="repeatable_read"):
            head = await conn.fetchrow(
                "SELECT created_at, version FROM broker_topics WHERE name = $1", name
            )
            if head is None:
                return None
            rows = await conn.fetch(
                "SELECT queue, pattern, created_at FROM broker_topic_bindings WHERE topic = $1",
                name,
            )
        return StoredTopic(name, head[0], head[1], [StoredBinding(*row) for row in rows])

    async def topic_version(self, name: str) -> int | None:
        """The version of a topic, or ``None``."""
        version = await self._pool().fetchval(
            "SELECT version FROM broker_topics WHERE name = $1", name
        )
        return None if version is None else int(version)

    async def create_topic(self, name: str, created_at: float) -> bool:
        """Create a topic; ``False`` when it exists."""
        await self._before_write()
        status = await self._pool().execute(
            "INSERT INTO broker_topics (name, created_at) VALUES ($1, $2) "
            "ON CONFLICT (name) DO NOTHING",
            name,
            created_at,
        )
        return row_count(status) > 0

    async def delete_topic(self, name: str) -> bool:
        """Delete a topic and (by cascade) its bindings; return whether it existed."""
        await self._before_write()
        status = await self._pool().execute("DELETE FROM broker_topics WHERE name = $1", name)
        return row_count(status) > 0

    async def bind(self, topic: str, binding: StoredBinding) -> int | None:
        """Add a binding; the topic's new version, ``None`` when there is no topic."""
        await self._before_write()
        async with self._pool().acquire() as conn, conn.transaction():
            version = await conn.fetchval(
                "UPDATE broker_topics SET version = version + 1 WHERE name = $1 RETURNING version",
                topic,
            )
            if version is None:
                return None
            await conn.execute(
                "INSERT INTO broker_topic_bindings (topic, queue, pattern, created_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                topic,
                *binding,
            )
        return int(version)

    async def unbind(self, topic: str, queue: str, pattern: str) -> tuple[bool, int] | None:
        """Drop a binding: ``(whether it was there, new version)``, ``None`` without topic."""
        await self._before_write()
        async with self._pool().acquire() as conn, conn.transaction():
            version = await conn.fetchval(
                "UPDATE broker_topics SET version = version + 1 WHERE name = $1 RETURNING version",
                topic,
            )
            if version is None:
                return None
            status = await conn.execute(
                "DELETE FROM broker_topic_bindings WHERE topic = $1 AND queue = $2 "
                "AND pattern = $3",
                topic,
                queue,
                pattern,
            )
        return row_count(status) > 0, int(version)

    async def unbind_queue(self, queue: str) -> None:
        """Drop every binding of a deleted queue, moving the versions of their topics."""
        await self._before_write()
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE broker_topics SET version = version + 1 WHERE name IN "
                "(SELECT topic FROM broker_topic_bindings WHERE queue = $1)",
                queue,
            )
            await conn.execute("DELETE FROM broker_topic_bindings WHERE queue = $1", queue)

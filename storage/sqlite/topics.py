"""`SQLiteTopicStore`: topics and their bindings in the SQLite file.

Tables ``topics(name, created_at, version)`` and ``topic_bindings(topic,
queue, pattern, created_at)`` (migration step ``_topics``). Writes run in the
writer thread (`storage.sqlite.writer`), each in a transaction of its own,
after the message operations buffered before them; reads go through the
read-only connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from broker_core.topic_registry import StoredBinding, StoredTopic

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    import aiosqlite

    from .writer import SQLiteWriter

__all__ = ["SQLiteTopicStore"]

R = TypeVar("R")


def _in_transaction(fn: Callable[[sqlite3.Connection], R]) -> Callable[[sqlite3.Connection], R]:
    """``fn`` run in one ``BEGIN IMMEDIATE`` transaction (the writer's connection autocommits)."""

    def run(db: sqlite3.Connection) -> R:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    return run


class SQLiteTopicStore:
    """The `broker_core.topic_registry.TopicStore` of a `SQLiteStorage`.

    Args:
        writer: the storage's writer thread.
        reader: returns the storage's read-only connection (open() first).
    """

    def __init__(self, writer: SQLiteWriter, reader: Callable[[], aiosqlite.Connection]) -> None:
        self._writer = writer
        self._reader = reader

    async def load_topics(self) -> list[StoredTopic]:
        """Every topic with its bindings."""
        reader = self._reader()
        async with reader.execute("SELECT name, created_at, version FROM topics") as cursor:
            heads = await cursor.fetchall()
        async with reader.execute(
            "SELECT topic, queue, pattern, created_at FROM topic_bindings"
        ) as cursor:
            rows = await cursor.fetchall()
        bindings: dict[str, list[StoredBinding]] = {}
        for topic, queue, pattern, at in rows:
            bindings.setdefault(topic, []).append(StoredBinding(queue, pattern, at))
        return [
            StoredTopic(name, created_at, version, bindings.get(name, []))
            for name, created_at, version in heads
        ]

    async def load_topic(self, name: str) -> StoredTopic | None:
        """One topic with its bindings, or ``None``."""
        reader = self._reader()
        async with reader.execute(
            "SELECT created_at, version FROM topics WHERE name = ?", (name,)
        ) as cursor:
            head = await cursor.fetchone()
        if head is None:
            return None
        async with reader.execute(
            "SELECT queue, pattern, created_at FROM topic_bindings WHERE topic = ?", (name,)
        ) as cursor:
            rows = await cursor.fetchall()
        return StoredTopic(name, head[0], head[1], [StoredBinding(*row) for row in rows])

    async def topic_version(self, name: str) -> int | None:
        """The version of a topic, or ``None``."""
        async with self._reader().execute(
            "SELECT version FROM topics WHERE name = ?", (name,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else int(row[0])

    async def create_topic(self, name: str, created_at: float) -> bool:
        """Create a topic; ``False`` when it exists."""
        await self._writer.flush()
        return await self._writer.call(
            lambda db: (
                db.execute(
                    "INSERT OR IGNORE INTO topics (name, created_at) VALUES (?, ?)",
                    (name, created_at),
                ).rowcount
                > 0
            )
        )

    async def delete_topic(self, name: str) -> bool:
        """Delete a topic and its bindings; return whether it existed."""

        def delete(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM topic_bindings WHERE topic = ?", (name,))
            return db.execute("DELETE FROM topics WHERE name = ?", (name,)).rowcount > 0

        await self._writer.flush()
        return await self._writer.call(_in_transaction(delete))

    async def bind(self, topic: str, binding: StoredBinding) -> int | None:
        """Add a binding; the topic's new version, ``None`` when there is no topic."""

        def bind(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                "UPDATE topics SET version = version + 1 WHERE name = ? RETURNING version",
                (topic,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "INSERT OR IGNORE INTO topic_bindings (topic, queue, pattern, created_at)"
                " VALUES (?, ?, ?, ?)",
                (topic, *binding),
            )
            return int(row[0])

        await self._writer.flush()
        return await self._writer.call(_in_transaction(bind))

    async def unbind(self, topic: str, queue: str, pattern: str) -> tuple[bool, int] | None:
        """Drop a binding: ``(whether it was there, new version)``, ``None`` without topic."""

        def unbind(db: sqlite3.Connection) -> tuple[bool, int] | None:
            row = db.execute(
                "UPDATE topics SET version = version + 1 WHERE name = ? RETURNING version",
                (topic,),
            ).fetchone()
            if row is None:
                return None
            gone = db.execute(
                "DELETE FROM topic_bindings WHERE topic = ? AND queue = ? AND pattern = ?",
                (topic, queue, pattern),
            ).rowcount
            return gone > 0, int(row[0])

        await self._writer.flush()
        return await self._writer.call(_in_transaction(unbind))

    async def unbind_queue(self, queue: str) -> None:
        """Drop every binding of a deleted queue."""

        def unbind(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE topics SET version = version + 1 WHERE name IN"
                " (SELECT topic FROM topic_bindings WHERE queue = ?)",
                (queue,),
            )
            db.execute("DELETE FROM topic_bindings WHERE queue = ?", (queue,))

        await self._writer.flush()
        await self._writer.call(_in_transaction(unbind))

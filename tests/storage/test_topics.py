"""The topic store of both backends: topics, bindings and versions, kept across a reopen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker_core.topic_registry import StoredBinding
from tests.storage.test_contract import backend, storage

if TYPE_CHECKING:
    from broker_core.journal import Storage
    from tests.storage.test_contract import Backend

__all__ = ["backend", "storage"]  # the fixtures, imported for pytest


def _topics(storage: Storage) -> Any:
    return storage.topics  # type: ignore[attr-defined]


async def test_topics_bindings_and_versions(storage: Storage) -> None:
    """create is once; bind and unbind move the version; a missing topic answers None."""
    topics = _topics(storage)
    assert await topics.create_topic("t", 1.0)
    assert not await topics.create_topic("t", 2.0)
    assert await topics.topic_version("t") == 0
    assert await topics.topic_version("none") is None
    assert await topics.bind("t", StoredBinding("q", "a.*", 3.0)) == 1
    assert await topics.bind("t", StoredBinding("q", "a.*", 3.0)) == 2  # idempotent, still moves
    assert await topics.bind("t", StoredBinding("r", "#", 4.0)) == 3
    assert await topics.bind("none", StoredBinding("q", "#", 4.0)) is None
    stored = await topics.load_topic("t")
    assert (stored.name, stored.created_at, stored.version) == ("t", 1.0, 3)
    assert sorted(stored.bindings) == [StoredBinding("q", "a.*", 3.0), StoredBinding("r", "#", 4.0)]
    assert await topics.unbind("t", "q", "a.*") == (True, 4)
    assert await topics.unbind("t", "q", "a.*") == (False, 5)
    assert await topics.unbind("none", "q", "a.*") is None
    assert await topics.load_topic("none") is None


async def test_unbind_queue_and_delete_topic(storage: Storage) -> None:
    """A deleted queue's bindings go from every topic; deleting a topic takes its bindings."""
    topics = _topics(storage)
    for name in ("t", "u"):
        await topics.create_topic(name, 1.0)
        await topics.bind(name, StoredBinding("gone", "#", 2.0))
        await topics.bind(name, StoredBinding("kept", "a", 2.0))
    await topics.unbind_queue("gone")
    for stored in await topics.load_topics():
        assert [b.queue for b in stored.bindings] == ["kept"]
        assert stored.version == 3
    assert await topics.delete_topic("t")
    assert not await topics.delete_topic("t")
    assert [t.name for t in await topics.load_topics()] == ["u"]
    assert await topics.create_topic("t", 5.0)
    assert (await topics.load_topic("t")).bindings == []


async def test_topics_survive_a_reopen(backend: Backend) -> None:
    """What was written is there after a close and a new open."""
    first = await backend.open()
    await _topics(first).create_topic("t", 1.0)
    await _topics(first).bind("t", StoredBinding("q", "a.#", 2.0))
    await first.close()
    second = await backend.open()
    [stored] = await _topics(second).load_topics()
    assert stored.bindings == [StoredBinding("q", "a.#", 2.0)]

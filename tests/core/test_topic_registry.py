"""`Topics` over a real broker and SQLite store: routing, atomicity, queues deleted, the cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import pytest

from broker_core.auth import Action, Permission, User
from broker_core.errors import (
    InvalidName,
    InvalidRoutingKey,
    NotPermitted,
    QueueFull,
    QueueNotFound,
    TopicExists,
    TopicNotFound,
)
from broker_core.messages import CreateQueueRequest
from broker_core.topic_messages import TopicPublishRequest
from broker_core.topic_registry import BindingNotFound, Topics, plain_request
from broker_core.types import Overflow

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from broker_core.broker import Broker

ADMIN = User(username="root", password_hash="x", created_at=datetime.now(UTC), admin=True)


def user(*grants: tuple[str, tuple[Action, ...]]) -> User:
    return User(
        username="u",
        password_hash="x",
        created_at=datetime.now(UTC),
        permissions=tuple(Permission(pattern=p, actions=a) for p, a in grants),
    )


def message(key: str, content: bytes = b"1", **fields: object) -> TopicPublishRequest:
    return TopicPublishRequest(routing_key=key, content=msgspec.Raw(content), **fields)  # type: ignore[arg-type]


@pytest.fixture(params=[False, True], ids=["standalone", "versioned"])
async def topics(request: pytest.FixtureRequest, broker: Broker) -> AsyncIterator[Topics]:
    """Topics of ``broker``; "versioned" reads each topic's version as shared storage does."""
    store = broker.storage.topics  # type: ignore[attr-defined]
    registry = Topics(broker, store, shared=request.param)
    await registry.load()
    for name in ("a", "b"):
        await broker.create_queue(CreateQueueRequest(name=name))
    yield registry
    await registry.close()


async def test_publish_routes_once_per_queue_and_commits(topics: Topics, broker: Broker) -> None:
    """Each matched queue gets one copy; the answer names them with their ids."""
    await topics.create("t", ADMIN)
    await topics.bind("t", "a", "x.*", ADMIN)
    await topics.bind("t", "a", "#", ADMIN)
    await topics.bind("t", "b", "y", ADMIN)
    result = await topics.publish("t", message("x.1"), ADMIN)
    assert [r.queue for r in result.routed] == ["a"]
    assert broker.info("a").pending == 1
    assert broker.info("b").pending == 0
    assert (await topics.publish("t", message(""), ADMIN)).routed[0].queue == "a"
    assert await topics.route("t", "y", ADMIN) == ["a", "b"]


async def test_a_full_queue_refuses_every_copy(topics: Topics, broker: Broker) -> None:
    """QueueFull from one matched queue leaves the others untouched."""
    await broker.create_queue(
        CreateQueueRequest(name="full", max_length=1, overflow=Overflow.REJECT_PUBLISH)
    )
    await topics.create("t", ADMIN)
    for queue in ("a", "full"):
        await topics.bind("t", queue, "#", ADMIN)
    await topics.publish("t", message("k"), ADMIN)
    with pytest.raises(QueueFull):
        await topics.publish("t", message("k"), ADMIN)
    assert broker.info("a").pending == 1


async def test_errors_of_names_keys_and_bindings(topics: Topics) -> None:
    """Each mistake raises its own error."""
    await topics.create("t", ADMIN)
    with pytest.raises(TopicExists):
        await topics.create("t", ADMIN)
    with pytest.raises(InvalidName):
        await topics.create("t t", ADMIN)
    with pytest.raises(TopicNotFound):
        await topics.get("none", ADMIN)
    with pytest.raises(TopicNotFound):
        await topics.delete("none", ADMIN)
    with pytest.raises(QueueNotFound):
        await topics.bind("t", "none", "#", ADMIN)
    with pytest.raises(InvalidRoutingKey):
        await topics.bind("t", "a", "a..b", ADMIN)
    with pytest.raises(InvalidRoutingKey):
        await topics.publish("t", message("a.*"), ADMIN)
    with pytest.raises(BindingNotFound):
        await topics.unbind("t", "a", "x", ADMIN)
    with pytest.raises(TopicNotFound):
        await topics.bind("none", "a", "#", ADMIN)


async def test_permissions(topics: Topics) -> None:
    """publish on the topic to publish; manage on topic and queue to bind; hidden is missing."""
    await topics.create("t", ADMIN)
    await topics.bind("t", "a", "#", ADMIN)
    publisher = user(("t", (Action.PUBLISH,)), ("a", (Action.CONSUME,)))
    assert len((await topics.publish("t", message("k"), publisher)).routed) == 1
    with pytest.raises(NotPermitted):
        await topics.bind("t", "a", "k", publisher)
    with pytest.raises(TopicNotFound):
        await topics.publish("hidden", message("k"), publisher)
    manager = user(("t", (Action.MANAGE,)), ("a", (Action.CONSUME,)))
    with pytest.raises(NotPermitted):
        await topics.bind("t", "a", "k", manager)
    with pytest.raises(NotPermitted):
        await topics.unbind("t", "a", "#", manager)
    with pytest.raises(QueueNotFound):
        await topics.bind("t", "b", "k", manager)
    with pytest.raises(QueueNotFound):
        await topics.unbind("t", "b", "k", manager)
    with pytest.raises(NotPermitted):
        await topics.publish("t", message("k"), manager)
    assert [b.queue for b in (await topics.get("t", manager)).bindings] == ["a"]
    assert await topics.route("t", "k", user(("t", (Action.PUBLISH,)))) == []
    assert [t.name for t in await topics.all(manager)] == ["t"]


async def test_deleted_queue_and_topic(topics: Topics, broker: Broker) -> None:
    """A deleted queue's bindings go; a deleted topic is not found."""
    await topics.create("t", ADMIN)
    await topics.bind("t", "a", "#", ADMIN)
    await topics.bind("t", "b", "#", ADMIN)
    await broker.delete_queue("a")
    assert [b.queue for b in (await topics.get("t", ADMIN)).bindings] == ["b"]
    await topics.unbind("t", "b", "#", ADMIN)
    await topics.delete("t", ADMIN)
    assert await topics.all(ADMIN) == []
    assert topics.names() == []


async def test_a_second_registry_on_the_same_store_follows_through_versions(broker: Broker) -> None:
    """Two registries on one store (as two nodes): a change by one routes the next publish of
    the other when it reads versions, and a topic deleted by one is gone for the other."""
    store = broker.storage.topics  # type: ignore[attr-defined]
    one, two = Topics(broker, store, shared=True), Topics(broker, store, shared=True)
    await one.load()
    await two.load()
    await broker.create_queue(CreateQueueRequest(name="q"))
    await one.create("t", ADMIN)
    assert (await two.publish("t", message("k"), ADMIN)).routed == []
    await one.bind("t", "q", "k", ADMIN)
    assert [r.queue for r in (await two.publish("t", message("k"), ADMIN)).routed] == ["q"]
    await two.unbind("t", "q", "k", ADMIN)
    assert (await one.publish("t", message("k"), ADMIN)).routed == []
    await two.delete("t", ADMIN)
    with pytest.raises(TopicNotFound):
        await one.publish("t", message("k"), ADMIN)
    await two.create("t", ADMIN)
    await one.create("u", ADMIN)
    assert [t.name for t in await two.all(ADMIN)] == ["t", "u"]
    await one.close()
    await two.close()


async def test_load_drops_bindings_of_queues_gone(broker: Broker) -> None:
    """Bindings stored for a queue that no longer exists are dropped at load."""
    store = broker.storage.topics  # type: ignore[attr-defined]
    first = Topics(broker, store)
    await first.load()
    await broker.create_queue(CreateQueueRequest(name="q"))
    await first.create("t", ADMIN)
    await first.bind("t", "q", "#", ADMIN)
    await first.close()  # no longer told of deletions: as if the broker crashed
    await broker.delete_queue("q")
    second = Topics(broker, store)
    await second.load()
    assert (await second.get("t", ADMIN)).bindings == []
    assert (await store.load_topic("t")).bindings == []
    await second.close()


def test_plain_request_keeps_the_message_fields() -> None:
    """The copy each queue gets has the message's own fields, not the routing key."""
    plain = plain_request(message("k", b'{"a":1}', priority=4, dedup_id="d", group="g"))
    assert type(plain).__name__ == "PublishRequest"
    assert (plain.priority, plain.dedup_id, bytes(plain.content)) == (4, "d", b'{"a":1}')

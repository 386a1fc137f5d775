"""`Topics`: the topics of a broker, their bindings, and publishing through them.

A topic routes one publish to every queue bound to it by a pattern that
matches the publish's routing key (`broker_core.topics`). The copies are
committed together through `Broker.publish_fanout`, the path ``POST
/publish`` takes: one journal batch, all or nothing, each queue once. A
matched queue that refuses (full with ``reject_publish``) refuses the whole
publish and nothing is routed.

Topics and bindings are kept in storage through a `TopicStore` (written
directly, like users, not through the message journal) and cached here, one
`BindingTrie` per topic. On shared storage (several nodes) the database is
the truth: each topic has a version that every bind and unbind moves, and a
node reads it before it routes, so a binding made on one node routes the
next publish made on any other (one indexed read per publish; the bindings
are read again only when the version moved).

Permissions (DESIGN.md, Topics): patterns of a user's permissions match
topic names as they match queue names. Publishing needs ``publish`` on the
topic; creating, deleting, binding and unbinding need ``manage`` on the
topic, and binding also on the queue. A topic the caller has no permission
on answers like a missing one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from loguru import logger

from .auth import Action, allowed
from .errors import NotPermitted, QueueNotFound, TopicExists, TopicNotFound
from .messages import PublishRequest, check_queue_name, from_timestamp
from .permissions import visible
from .topic_messages import BindingInfo, RoutedMessage, TopicInfo, TopicPublishResult
from .topics import BindingTrie, check_pattern, check_routing_key

if TYPE_CHECKING:
    from .auth import User
    from .broker import Broker
    from .topic_messages import TopicPublishRequest

__all__ = [
    "BindingNotFound",
    "StoredBinding",
    "StoredTopic",
    "TopicStore",
    "Topics",
    "plain_request",
    "publish_fields",
    "require_topic",
    "require_visible_topic",
]


class StoredBinding(NamedTuple):
    """A binding as storage keeps it."""

    queue: str
    pattern: str
    created_at: float


class StoredTopic(NamedTuple):
    """A topic as storage keeps it: ``version`` moves with every change of its bindings."""

    name: str
    created_at: float
    version: int
    bindings: list[StoredBinding]


class TopicStore(Protocol):
    """Where topics and bindings are kept (each backend's ``topics`` store)."""

    async def load_topics(self) -> list[StoredTopic]:
        """Every topic with its bindings."""
        ...

    async def load_topic(self, name: str) -> StoredTopic | None:
        """One topic with its bindings, or ``None``."""
        ...

    async def topic_version(self, name: str) -> int | None:
        """The version of a topic, or ``None`` when there is no such topic."""
        ...

    async def create_topic(self, name: str, created_at: float) -> bool:
        """Create a topic; return ``False`` when it exists already."""
        ...

    async def delete_topic(self, name: str) -> bool:
        """Delete a topic and its bindings; return whether it existed."""
        ...

    async def bind(self, topic: str, binding: StoredBinding) -> int | None:
        """Add a binding (no-op when it exists); the topic's new version, ``None`` if no topic."""
        ...

    async def unbind(self, topic: str, queue: str, pattern: str) -> tuple[bool, int] | None:
        """Drop a binding: ``(whether it was there, new version)``, ``None`` if no topic."""
        ...

    async def unbind_queue(self, queue: str) -> None:
        """Drop every binding of a deleted queue (moving the versions of their topics)."""
        ...


def require_topic(user: User, action: Action, topic: str) -> None:
    """Raise unless ``user`` may ``action`` on ``topic`` (names match permission patterns).

    Raises:
        TopicNotFound: ``user`` has no permission at all on the name (404, as if missing).
        NotPermitted: it has some, but not ``action`` (403).
    """
    if not allowed(user, action, topic):
        if not visible(user, topic):
            raise TopicNotFound(topic)
        raise NotPermitted(action.value, topic)


class _Topic:
    """One topic's cached state: its bindings (with their times) and their trie."""

    __slots__ = ("bindings", "created_at", "trie", "version")

    def __init__(self, stored: StoredTopic) -> None:
        self.created_at = stored.created_at
        self.version = stored.version
        self.trie = BindingTrie()
        self.bindings: dict[tuple[str, str], float] = {}
        for binding in stored.bindings:
            self.trie.add(binding.queue, binding.pattern)
            self.bindings[binding.queue, binding.pattern] = binding.created_at


class Topics:
    """The topics of one broker over a `TopicStore`.

    Call `load` once the broker started, before serving. Every method that
    names a topic raises `TopicNotFound` when there is none.

    Args:
        broker: the broker whose queues bindings name.
        store: where topics are kept.
        shared: whether other nodes change the same store (then `_fresh`
            reads each topic's version before using the cache).
    """

    def __init__(self, broker: Broker, store: TopicStore, *, shared: bool = False) -> None:
        self._broker = broker
        self._store = store
        self._shared = shared
        self._topics: dict[str, _Topic] = {}

    async def load(self) -> None:
        """Read every topic; drop bindings of queues that no longer exist (deleted in a crash)."""
        stored = await self._store.load_topics()
        self._topics = {topic.name: _Topic(topic) for topic in stored}
        orphans = {
            queue
            for topic in self._topics.values()
            for queue, _ in topic.bindings
            if self._broker.find_actor(queue) is None
        }
        for queue in orphans:
            await self._store.unbind_queue(queue)
            self._forget_queue(queue)
        self._broker.on_queue_dropped.append(self._queue_dropped)
        logger.info("topics loaded", topics=len(self._topics))

    async def close(self) -> None:
        """Stop following queue deletions."""
        if self._queue_dropped in self._broker.on_queue_dropped:
            self._broker.on_queue_dropped.remove(self._queue_dropped)

    # -- reads --------------------------------------------------------------------

    async def all(self, user: User) -> list[TopicInfo]:
        """The topics ``user`` may know of, by name, with the bindings it may see."""
        if self._shared:
            await self._reload_all()
        return [
            self._info(name, topic, user)
            for name, topic in sorted(self._topics.items())
            if visible(user, name)
        ]

    async def get(self, name: str, user: User) -> TopicInfo:
        """One topic ``user`` may know of."""
        require_visible_topic(user, name)
        return self._info(name, await self._fresh(name), user)

    async def route(self, name: str, routing_key: str, user: User) -> list[str]:
        """The queues (that ``user`` may see) a publish with ``routing_key`` would reach now."""
        require_visible_topic(user, name)
        topic = await self._fresh(name)
        queues = topic.trie.match_words(check_routing_key(routing_key))
        return sorted(q for q in queues if visible(user, q) and self._broker.find_actor(q))

    def _info(self, name: str, topic: _Topic, user: User) -> TopicInfo:
        return TopicInfo(
            name=name,
            created_at=from_timestamp(topic.created_at),
            bindings=[
                BindingInfo(topic=name, queue=queue, pattern=pattern, created_at=from_timestamp(at))
                for (queue, pattern), at in sorted(topic.bindings.items())
                if visible(user, queue)
            ],
        )

    # -- changes ------------------------------------------------------------------

    async def create(self, name: str, user: User) -> TopicInfo:
        """Create a topic (``manage`` on its name).

        Raises:
            InvalidName: ``name`` breaks the queue-name rule.
            TopicExists: there is one already.
        """
        check_queue_name(name)
        require_topic(user, Action.MANAGE, name)
        now = self._broker.clock()
        if name in self._topics and not self._shared:
            raise TopicExists(name)
        if not await self._store.create_topic(name, now):
            raise TopicExists(name)
        topic = self._topics[name] = _Topic(StoredTopic(name, now, 0, []))
        logger.info("topic created", topic=name)
        return self._info(name, topic, user)

    async def delete(self, name: str, user: User) -> None:
        """Delete a topic and its bindings (``manage`` on its name)."""
        require_topic(user, Action.MANAGE, name)
        await self._fresh(name)
        existed = await self._store.delete_topic(name)
        self._topics.pop(name, None)
        if not existed:
            raise TopicNotFound(name)
        logger.info("topic deleted", topic=name)

    async def bind(self, name: str, queue: str, pattern: str, user: User) -> BindingInfo:
        """Bind ``queue`` to the topic by ``pattern`` (``manage`` on both); idempotent.

        Raises:
            InvalidRoutingKey: a bad pattern (422).
            QueueNotFound: no such queue, or one ``user`` may not see (404).
        """
        require_topic(user, Action.MANAGE, name)
        check_pattern(pattern)
        if not allowed(user, Action.MANAGE, queue):
            if not visible(user, queue):
                raise QueueNotFound(queue)
            raise NotPermitted(Action.MANAGE.value, queue)
        topic = await self._fresh(name)
        if self._broker.find_actor(queue) is None:
            raise QueueNotFound(queue)
        at = topic.bindings.get((queue, pattern), self._broker.clock())
        version = await self._store.bind(name, StoredBinding(queue, pattern, at))
        if version is None:
            self._topics.pop(name, None)
            raise TopicNotFound(name)
        topic.trie.add(queue, pattern)
        topic.bindings[queue, pattern] = at
        topic.version = version
        if self._broker.find_actor(queue) is None:
            # Deleted while the binding was written: it goes with its queue.
            await self._store.unbind_queue(queue)
            self._forget_queue(queue)
            raise QueueNotFound(queue)
        return BindingInfo(topic=name, queue=queue, pattern=pattern, created_at=from_timestamp(at))

    async def unbind(self, name: str, queue: str, pattern: str, user: User) -> None:
        """Remove a binding (``manage`` on the topic and the queue).

        Raises:
            TopicNotFound: no such topic.
            BindingNotFound: the topic has no such binding (404 ``binding_not_found``).
        """
        require_topic(user, Action.MANAGE, name)
        check_pattern(pattern)
        if not allowed(user, Action.MANAGE, queue):
            if not visible(user, queue):
                raise QueueNotFound(queue)
            raise NotPermitted(Action.MANAGE.value, queue)
        topic = await self._fresh(name)
        outcome = await self._store.unbind(name, queue, pattern)
        if outcome is None:
            self._topics.pop(name, None)
            raise TopicNotFound(name)
        existed, version = outcome
        topic.trie.remove(queue, pattern)
        topic.bindings.pop((queue, pattern), None)
        topic.version = version
        if not existed:
            raise BindingNotFound(name, queue, pattern)

    # -- publish ------------------------------------------------------------------

    async def publish(
        self, name: str, request: TopicPublishRequest, user: User
    ) -> TopicPublishResult:
        """Publish one message to every queue whose binding matches its routing key.

        All copies commit in one batch, or none does; returns once committed.
        The caller has checked content size and headers.

        Raises:
            TopicNotFound: no such topic (or ``user`` may not know of it).
            NotPermitted: ``user`` lacks ``publish`` on the topic.
            InvalidRoutingKey: a bad routing key (422).
            QueueFull: a matched queue refuses (nothing was routed).
        """
        require_topic(user, Action.PUBLISH, name)
        words = check_routing_key(request.routing_key)
        topic = await self._fresh(name)
        find = self._broker.find_actor
        queues = sorted(q for q in topic.trie.match_words(words) if find(q) is not None)
        if not queues:
            return TopicPublishResult(routing_key=request.routing_key, routed=[])
        published = await self._broker.publish_fanout(queues, plain_request(request), name)
        return TopicPublishResult(
            routing_key=request.routing_key,
            routed=[
                RoutedMessage(queue=p.queue, message_id=p.message_id, duplicate=p.duplicate)
                for p in published
            ],
        )

    # -- the cache ----------------------------------------------------------------

    async def _fresh(self, name: str) -> _Topic:
        """The cached topic, read again first when another node may have changed it."""
        topic = self._topics.get(name)
        if not self._shared:
            if topic is None:
                raise TopicNotFound(name)
            return topic
        version = await self._store.topic_version(name)
        if version is None:
            self._topics.pop(name, None)
            raise TopicNotFound(name)
        if topic is None or topic.version != version:
            stored = await self._store.load_topic(name)
            if stored is None:
                self._topics.pop(name, None)
                raise TopicNotFound(name)
            topic = self._topics[name] = _Topic(stored)
        return topic

    async def _reload_all(self) -> None:
        self._topics = {topic.name: _Topic(topic) for topic in await self._store.load_topics()}

    def _forget_queue(self, queue: str) -> None:
        for topic in self._topics.values():
            for key in [key for key in topic.bindings if key[0] == queue]:
                del topic.bindings[key]
                topic.trie.remove(*key)

    async def _queue_dropped(self, queue: str) -> None:
        """A queue was deleted (here or by another node): its bindings go with it."""
        self._forget_queue(queue)
        try:
            await self._store.unbind_queue(queue)
        except Exception as exc:
            # Left in storage, they are dropped at the next start (`load`).
            logger.opt(exception=exc).warning("dropping a deleted queue's bindings failed")

    def names(self) -> list[str]:
        """The names of the topics cached here, sorted (dashboards, metrics)."""
        return sorted(self._topics)


def require_visible_topic(user: User, name: str) -> None:
    """Raise `TopicNotFound` unless ``user`` has some permission on topic ``name``."""
    if not visible(user, name):
        raise TopicNotFound(name)


_PLAIN_FIELDS = PublishRequest.__struct_fields__


def publish_fields(request: PublishRequest) -> dict[str, Any]:
    """The `PublishRequest` fields of ``request`` (a topic publish, a WebSocket frame), by name."""
    return {field: getattr(request, field) for field in _PLAIN_FIELDS}


def plain_request(request: PublishRequest) -> PublishRequest:
    """The `PublishRequest` part of a topic publish (what each queue's copy is made of)."""
    return PublishRequest(**publish_fields(request))


class BindingNotFound(TopicNotFound):
    """The topic has no such binding (404 ``binding_not_found``)."""

    code = "binding_not_found"

    def __init__(self, topic: str, queue: str, pattern: str) -> None:
        super().__init__(topic)
        self.queue = queue
        self.pattern = pattern
        self.args = (f"topic {topic!r} has no binding of queue {queue!r} by {pattern!r}",)

"""The wire shapes of topics: requests and answers shared by REST, WebSocket and GraphQL.

Kept beside `broker_core.messages` (whose `PublishRequest` a topic publish
extends) in a module of their own, one concept: topics and their bindings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from .messages import PublishRequest, QueueNameField
from .topics import MAX_KEY_LENGTH

__all__ = [
    "BindingInfo",
    "BindingRequest",
    "CreateTopicRequest",
    "RouteResult",
    "RoutedMessage",
    "TopicInfo",
    "TopicPublishRequest",
    "TopicPublishResult",
]

RoutingKeyField = Annotated[str, msgspec.Meta(max_length=MAX_KEY_LENGTH)]
GroupField = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class CreateTopicRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /topics``: a name under the queue-name rule."""

    name: QueueNameField


class BindingRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST`` and ``DELETE /topics/{name}/bindings``: a queue and its pattern.

    ``pattern`` is words separated by dots; ``*`` stands for one word, ``#``
    for zero or more (`broker_core.topics`).
    """

    queue: QueueNameField
    pattern: RoutingKeyField


class BindingInfo(msgspec.Struct, kw_only=True, frozen=True):
    """One binding of a topic: messages whose key matches ``pattern`` go to ``queue``."""

    topic: str
    queue: str
    pattern: str
    created_at: datetime


class TopicInfo(msgspec.Struct, kw_only=True, frozen=True):
    """A topic and its bindings (those on queues the caller may see)."""

    name: str
    created_at: datetime
    bindings: list[BindingInfo]


class TopicPublishRequest(PublishRequest, kw_only=True, frozen=True):
    """Body of ``POST /topics/{name}/publish``: a message and the key that routes it.

    Every per-message option of a queue publish applies to each copy.
    ``group`` is validated here; it reaches the queues once messages carry
    groups (`PublishRequest` gains the field), and is ignored until then.
    """

    routing_key: RoutingKeyField
    group: GroupField | None = None


class RoutedMessage(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The copy of a topic publish that one queue got."""

    queue: str
    message_id: int
    duplicate: bool = False


class TopicPublishResult(msgspec.Struct, kw_only=True, frozen=True):
    """What a confirmed topic publish answers: each queue it reached, once, by name."""

    routing_key: str
    routed: list[RoutedMessage]


class RouteResult(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /topics/{name}/route``: the queues a key would reach now (nothing is published)."""

    topic: str
    routing_key: str
    queues: list[str]

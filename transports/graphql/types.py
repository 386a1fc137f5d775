"""The GraphQL types of the broker, each derived from the Struct REST serves for it.

The Structs come from `broker_core.messages` (or, for ``Stats``, observability):
a transport never imports another transport's modules.

* ``Queue``: `broker_core.messages.QueueInfo`
* ``Message``: `broker_core.messages.MessageView`
* ``MessagesPage``: `broker_core.messages.MessagesPage`
* ``PublishResult``: `broker_core.messages.PublishResult`
* ``SettleResult``: `broker_core.messages.SettleResult`
* ``SettledMessage``: `broker_core.messages.SettledResponse`
* ``PurgeResult``: `broker_core.messages.PurgeResponse`
* ``QueueEvent``: `broker_core.messages.QueueEvent`, plus ``missed`` (`EventDelivery`)
* ``Stats``: `transports.observability.stats.StatsResponse` (its nested Structs
  become ``SystemStats``, ``BrokerSpecific``, ``StorageStats``, ``QueueCounts``
  and ``Rates``)
* ``ServiceToken`` and ``CreatedServiceToken``: `broker_core.service_tokens`
* inputs ``QueueOptionsInput``, ``QueueUpdateInput`` and ``PublishInput``:
  `broker_core.messages.QueueOptions`, ``UpdateQueueRequest`` and ``PublishRequest``
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from broker_core.messages import (
    MessagesPage as MessagesPageStruct,
    MessageView,
    PublishRequest,
    PublishResult as PublishResultStruct,
    PurgeResponse,
    QueueEvent as QueueEventStruct,
    QueueInfo,
    QueueOptions,
    SettledResponse,
    SettleResult as SettleResultStruct,
    UpdateQueueRequest,
    from_timestamp,
)
from broker_core.service_tokens import CreatedServiceToken, ServiceTokenView

from ..observability.stats import StatsResponse
from .structs import input_type, object_type

__all__ = [
    "CreatedToken",
    "EventDelivery",
    "Message",
    "MessagesPage",
    "PublishInput",
    "PublishResult",
    "PurgeResult",
    "Queue",
    "QueueEvent",
    "QueueOptionsInput",
    "QueueUpdateInput",
    "ServiceToken",
    "SettleResult",
    "SettledMessage",
    "Stats",
]


class EventDelivery(QueueEventStruct, kw_only=True, frozen=True):
    """A `QueueEvent` as one subscriber receives it, with the events it missed before it."""

    missed: int = 0
    """Events dropped for this subscriber since the previous one, because it read too slowly."""


Queue = object_type(
    QueueInfo,
    name="Queue",
    description="A queue: its message counts, consumers and options.",
)
Message = object_type(
    MessageView,
    name="Message",
    description="A message as consumers and browsers see it; `content` is the JSON published.",
)
MessagesPage = object_type(
    MessagesPageStruct,
    name="MessagesPage",
    description="One page of a queue's messages; pass `nextCursor` as `after` for the next.",
)
PublishResult = object_type(
    PublishResultStruct,
    name="PublishResult",
    description="A confirmed publish: the new (or, for a duplicate, the first) message.",
)
SettleResult = object_type(
    SettleResultStruct,
    name="SettleResult",
    description="Ids a batch ack or nack settled, and for the others (`errors`: id -> why) not.",
)
SettledMessage = object_type(
    SettledResponse,
    name="SettledMessage",
    description="The message an `ack` or `nack` settled and its new status.",
)
PurgeResult = object_type(
    PurgeResponse,
    name="PurgeResult",
    description="How many pending messages a purge deleted.",
)
QueueEvent = object_type(
    EventDelivery,
    name="QueueEvent",
    description=(
        "Something that happened in a queue: `type` is published, delivered, acked, nacked, "
        "failed, dead_lettered, dropped, queue_created, queue_deleted or queue_purged."
    ),
    convert={"at": (datetime, from_timestamp)},
    docs={"missed": "Events dropped for you since the previous one, because you read too slowly."},
)
Stats = object_type(
    StatsResponse,
    name="Stats",
    description=(
        "The figures of `GET /stats`: uptime, requests, message counts, system readings "
        "and broker details; `brokerSpecific.queues` lists the queues you can see."
    ),
)

ServiceToken = object_type(
    ServiceTokenView,
    name="ServiceToken",
    description="A service token as admins list it (never its secret).",
)
CreatedToken = object_type(
    CreatedServiceToken,
    name="CreatedServiceToken",
    description="A service token just made; `token` is shown this once.",
)

if TYPE_CHECKING:
    # Generated classes: typed loosely for mypy, exact for Strawberry.
    QueueOptionsInput = Any
    QueueUpdateInput = Any
    PublishInput = Any
else:
    QueueOptionsInput = input_type(
        QueueOptions,
        name="QueueOptionsInput",
        description="A new queue's options; those left out take their defaults.",
    )
    QueueUpdateInput = input_type(
        UpdateQueueRequest,
        name="QueueUpdateInput",
        description="Options to change; those left out keep their value, null clears a limit.",
    )
    PublishInput = input_type(
        PublishRequest,
        name="PublishInput",
        description="One message to publish; `content` is any JSON value.",
    )

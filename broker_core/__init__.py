"""The broker's domain: messages, queue state, per-queue actors and the broker registry.

Nothing here speaks HTTP or touches a database driver: transports call the
`Broker`, and storage implements `Storage`.
"""

from __future__ import annotations

from .actor import QueueActor, QueueDeleted
from .broker import Broker
from .errors import (
    BrokerError,
    InvalidName,
    InvalidTransition,
    MessageNotFound,
    NotPermitted,
    QueueExists,
    QueueFull,
    QueueLimitReached,
    QueueNotFound,
    Unavailable,
)
from .journal import Journal, Storage
from .messages import (
    CreateQueueRequest,
    Entry,
    MessageView,
    PublishRequest,
    PublishResult,
    QueueEvent,
    QueueInfo,
    QueueOptions,
)
from .pending import BodyBudget, PendingOrder
from .queue import QueueState
from .types import MessageStatus, Overflow

__all__ = [
    "BodyBudget",
    "Broker",
    "BrokerError",
    "CreateQueueRequest",
    "Entry",
    "InvalidName",
    "InvalidTransition",
    "Journal",
    "MessageNotFound",
    "MessageStatus",
    "MessageView",
    "NotPermitted",
    "Overflow",
    "PendingOrder",
    "PublishRequest",
    "PublishResult",
    "QueueActor",
    "QueueDeleted",
    "QueueEvent",
    "QueueExists",
    "QueueFull",
    "QueueInfo",
    "QueueLimitReached",
    "QueueNotFound",
    "QueueOptions",
    "QueueState",
    "Storage",
    "Unavailable",
]

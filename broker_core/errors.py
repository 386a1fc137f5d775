"""Errors of the broker's domain.

The tree::

    BrokerError
    ├── QueueNotFound
    ├── QueueExists
    ├── QueueInUse
    ├── QueueLimitReached
    ├── InvalidName
    ├── MessageNotFound
    ├── InvalidTransition
    ├── QueueFull
    ├── NotPermitted
    ├── Unavailable
    ├── TopicNotFound
    ├── TopicExists
    ├── InvalidRoutingKey
    ├── InvalidSchedule
    ├── ScheduleNotFound
    └── ScheduleExists

Transports map each class to an HTTP status, a WebSocket error code and a
GraphQL error code in one place (``transports/errors.py``).
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "InvalidName",
    "InvalidRoutingKey",
    "InvalidSchedule",
    "InvalidTransition",
    "MessageNotFound",
    "NotPermitted",
    "QueueExists",
    "QueueFull",
    "QueueInUse",
    "QueueLimitReached",
    "QueueNotFound",
    "ScheduleExists",
    "ScheduleNotFound",
    "TopicExists",
    "TopicNotFound",
    "Unavailable",
]


class BrokerError(Exception):
    """Root of the broker's own errors; ``code`` is the stable machine-readable name."""

    code = "broker_error"


class QueueNotFound(BrokerError):
    """The named queue does not exist."""

    code = "queue_not_found"

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"queue {queue!r} does not exist")


class QueueExists(BrokerError):
    """A queue with that name exists already."""

    code = "queue_exists"

    def __init__(self, queue: str) -> None:
        self.queue = queue
        super().__init__(f"queue {queue!r} already exists")


class QueueInUse(BrokerError):
    """The queue can't be deleted: another queue dead-letters into it."""

    code = "queue_in_use"

    def __init__(self, queue: str, user: str) -> None:
        self.queue = queue
        self.user = user
        super().__init__(f"queue {queue!r} is the dead-letter queue of {user!r}")


class QueueLimitReached(BrokerError):
    """The broker holds as many queues as its settings allow."""

    code = "queue_limit"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the broker already holds its limit of {limit} queues")


class InvalidName(BrokerError):
    """A queue name breaks the naming rule."""

    code = "invalid_name"

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        super().__init__(f"invalid queue name {name[:64]!r}: {reason}")


class MessageNotFound(BrokerError):
    """No message with that id is visible to the caller."""

    code = "message_not_found"

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        super().__init__(f"message {message_id} does not exist")


class InvalidTransition(BrokerError):
    """The message is not in a state that allows the operation (e.g. ack of a pending one)."""

    code = "invalid_transition"

    def __init__(self, message_id: int, operation: str, status: str) -> None:
        self.message_id = message_id
        self.operation = operation
        self.status = status
        super().__init__(f"cannot {operation} message {message_id}: it is {status}")


class QueueFull(BrokerError):
    """A publish would pass the queue's ``max_length`` or ``max_bytes`` (``reject_publish``)."""

    code = "queue_full"

    def __init__(self, queue: str, limit: str) -> None:
        self.queue = queue
        self.limit = limit
        super().__init__(f"queue {queue!r} is full ({limit})")


class NotPermitted(BrokerError):
    """The caller lacks the permission the operation needs."""

    code = "forbidden"

    def __init__(self, action: str, queue: str | None = None) -> None:
        self.action = action
        self.queue = queue
        where = f" on queue {queue!r}" if queue is not None else ""
        super().__init__(f"not permitted to {action}{where}")


class Unavailable(BrokerError):
    """Storage cannot accept writes now; nothing was confirmed (a 503 for the client)."""

    code = "storage_unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"storage unavailable: {reason}")


class TopicNotFound(BrokerError):
    """The named topic does not exist (or the caller may not know of it)."""

    code = "topic_not_found"

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic!r} does not exist")


class TopicExists(BrokerError):
    """A topic with that name exists already."""

    code = "topic_exists"

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic!r} already exists")


class InvalidRoutingKey(BrokerError):
    """A routing key or binding pattern breaks the topic rules (``broker_core.topics``).

    ``field`` is the request field at fault: ``routing_key`` or ``pattern``.
    """

    code = "invalid"

    def __init__(self, field: str, value: str, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"invalid {field} {value[:64]!r}: {reason}")


class InvalidSchedule(BrokerError):
    """A schedule's definition is invalid; ``field`` names the field at fault (a 422)."""

    code = "invalid_schedule"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid {field}: {reason}")


class ScheduleNotFound(BrokerError):
    """The queue has no schedule of that name."""

    code = "schedule_not_found"

    def __init__(self, queue: str, name: str) -> None:
        self.queue = queue
        self.name = name
        super().__init__(f"queue {queue!r} has no schedule {name!r}")


class ScheduleExists(BrokerError):
    """The queue has a schedule of that name already."""

    code = "schedule_exists"

    def __init__(self, queue: str, name: str) -> None:
        self.queue = queue
        self.name = name
        super().__init__(f"queue {queue!r} already has a schedule {name!r}")

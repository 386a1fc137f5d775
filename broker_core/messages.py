"""The message model: every wire and storage shape of the broker, as msgspec Structs.

REST, WebSocket and GraphQL decode into and encode from these same Structs, so
there is one schema per concept. A message's ``content`` is kept as the raw
JSON bytes the publisher sent (``msgspec.Raw``): the broker never decodes or
re-encodes a body on its hot path.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

from .errors import InvalidName
from .retry import MAX_DELAY_MS, RetryPolicy
from .types import Overflow

__all__ = [
    "NAME_PATTERN",
    "AckRequest",
    "BatchPublishRequest",
    "BatchPublishResponse",
    "ConsumerInfo",
    "CreateQueueRequest",
    "Entry",
    "FanoutPublishRequest",
    "MessageView",
    "MessagesPage",
    "NackRequest",
    "PauseRequest",
    "PublishRequest",
    "PublishResult",
    "PurgeResponse",
    "QueueEvent",
    "QueueInfo",
    "QueueOptions",
    "RescheduleRequest",
    "SettleResult",
    "SettledResponse",
    "TouchRequest",
    "UpdateQueueRequest",
    "check_queue_name",
    "from_timestamp",
]

NAME_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
_NAME_RE = re.compile(NAME_PATTERN)

QueueNameField = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, max_length=200)]
Priority = Annotated[int, msgspec.Meta(ge=0, le=9)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=43200)]
# As RabbitMQ caps its TTLs and delays: about 49.7 days.
Millis = Annotated[int, msgspec.Meta(ge=1, le=MAX_DELAY_MS)]
DelayMillis = Annotated[int, msgspec.Meta(ge=0, le=MAX_DELAY_MS)]
GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
"""A message group: messages of one group go in order, one (``group_concurrency``) at a time."""
Headers = dict[
    Annotated[str, msgspec.Meta(max_length=256)], Annotated[str, msgspec.Meta(max_length=4096)]
]


def check_queue_name(name: str) -> str:
    """Return ``name`` if it follows the naming rule, else raise `InvalidName`."""
    if _NAME_RE.match(name) is None:
        raise InvalidName(name, "use 1-200 characters of A-Z, a-z, 0-9, '.', '_' and '-'")
    return name


_LATEST = datetime.max.replace(tzinfo=UTC)


def from_timestamp(ts: float) -> datetime:
    """Turn a stored Unix timestamp into an aware UTC datetime for the wire.

    An instant past the year 9999 (a ``ttl_ms`` or ``delay_ms`` of millennia
    is accepted) shows as the last one a datetime holds.
    """
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return _LATEST


class QueueOptions(msgspec.Struct, kw_only=True, frozen=True):
    """A queue's options, set at creation and changeable with ``PATCH /queues/{name}``.

    ``max_attempts`` counts deliveries: a message delivered that many times and
    then nacked (or whose lease expires) is dead-lettered instead of requeued.
    ``None`` means no limit for every optional field. ``retry`` spaces the
    requeues of a message (`retry.RetryPolicy`; ``None``: at once).
    ``paused`` stops deliveries (until ``paused_until`` if set): it is set by
    ``POST /queues/{name}/pause`` and stored with the options so that every
    node and every restart sees it.
    """

    max_attempts: PositiveInt | None = None
    dead_letter_queue: QueueNameField | None = None
    message_ttl_ms: Millis | None = None
    max_length: PositiveInt | None = None
    max_bytes: PositiveInt | None = None
    overflow: Overflow = Overflow.REJECT_PUBLISH
    lease: Seconds = 30.0
    retry: RetryPolicy | None = None
    paused: bool = False
    paused_until: datetime | None = None
    group_concurrency: PositiveInt = 1
    """How many messages of one group may be processing at once (`groups`)."""
    single_active_consumer: bool = False
    """Only one push consumer receives; the others stand by until it leaves."""


class CreateQueueRequest(QueueOptions, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /queues``: a name and the queue's options.

    A ``lease`` left out (or null) is the broker's default (``BROKER_DEFAULT_LEASE_S``).
    """

    name: QueueNameField
    # Optional here only: the broker fills it in, so a queue's options always have one.
    lease: Seconds | None = None  # type: ignore[assignment]


class UpdateQueueRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``PATCH /queues/{name}``: the options to change (unset ones keep their value)."""

    max_attempts: PositiveInt | msgspec.UnsetType | None = msgspec.UNSET
    dead_letter_queue: QueueNameField | msgspec.UnsetType | None = msgspec.UNSET
    message_ttl_ms: Millis | msgspec.UnsetType | None = msgspec.UNSET
    max_length: PositiveInt | msgspec.UnsetType | None = msgspec.UNSET
    max_bytes: PositiveInt | msgspec.UnsetType | None = msgspec.UNSET
    overflow: Overflow | msgspec.UnsetType = msgspec.UNSET
    lease: Seconds | msgspec.UnsetType = msgspec.UNSET
    retry: RetryPolicy | msgspec.UnsetType | None = msgspec.UNSET
    paused: bool | msgspec.UnsetType = msgspec.UNSET
    paused_until: datetime | msgspec.UnsetType | None = msgspec.UNSET
    group_concurrency: PositiveInt | msgspec.UnsetType = msgspec.UNSET
    single_active_consumer: bool | msgspec.UnsetType = msgspec.UNSET

    def apply(self, options: QueueOptions) -> QueueOptions:
        """Return ``options`` with the fields this request sets replaced."""
        changes = {
            field: value
            for field in self.__struct_fields__
            if (value := getattr(self, field)) is not msgspec.UNSET
        }
        if changes.get("paused") is False:
            changes["paused_until"] = None  # resumed: an old deadline means nothing
        return msgspec.structs.replace(options, **changes)


class QueueInfo(QueueOptions, kw_only=True, frozen=True):
    """A queue as ``GET /queues/{name}`` shows it: counts, consumers and options."""

    name: str
    created_at: datetime
    updated_at: datetime
    pending: int = 0
    processing: int = 0
    processed: int = 0
    failed: int = 0
    delayed: int = 0
    consumers: int = 0
    published_total: int = 0
    delivered_total: int = 0
    acked_total: int = 0
    nacked_total: int = 0
    groups: int = 0
    """Message groups with pending messages (held in this node's memory)."""
    largest_groups: dict[str, int] | None = None
    """Pending messages of the largest groups (at most 10), largest first."""


class PublishRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One message to publish.

    ``content`` is any JSON value, stored as the exact bytes sent. ``delay_ms``
    and ``deliver_at`` keep it invisible until then; ``ttl_ms`` drops (or
    dead-letters) it if not delivered in time; a repeated ``dedup_id`` within
    the queue's deduplication window returns the first message's id.
    """

    content: msgspec.Raw
    headers: Headers | None = None
    priority: Priority = 0
    delay_ms: DelayMillis | None = None
    deliver_at: datetime | None = None
    ttl_ms: Millis | None = None
    dedup_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    group: GroupName | None = None


class BatchPublishRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /queues/{name}/messages/batch``."""

    messages: Annotated[list[PublishRequest], msgspec.Meta(min_length=1)]


class FanoutPublishRequest(PublishRequest, kw_only=True, frozen=True):
    """Body of ``POST /publish``: one message for several queues, committed atomically."""

    queues: Annotated[list[QueueNameField], msgspec.Meta(min_length=1, max_length=100)]


class PublishResult(msgspec.Struct, kw_only=True, frozen=True):
    """What a confirmed publish answers: the new (or, for a duplicate, the first) message."""

    message_id: int
    queue: str
    status: Literal["pending"] = "pending"
    created_at: datetime
    duplicate: bool = False


class BatchPublishResponse(msgspec.Struct, kw_only=True, frozen=True):
    """The created messages of a batch publish, in request order."""

    messages: list[PublishResult]


class MessageView(msgspec.Struct, kw_only=True, frozen=True):
    """A message as consumers and browsers see it."""

    message_id: int
    queue: str
    status: str
    content: msgspec.Raw
    headers: dict[str, str] | None = None
    priority: int = 0
    attempt: int = 0
    redelivered: bool = False
    created_at: datetime
    deliver_at: datetime | None = None
    expires_at: datetime | None = None
    lease_expires_at: datetime | None = None
    dead_lettered_from: str | None = None
    last_error: str | None = None
    waiting: str | None = None
    """Why a pending message is not delivered yet: ``delayed``, ``retry_backoff`` or ``group``."""
    group: str | None = None
    blocked_by: int | None = None
    """With ``waiting: "group"``: the message of its group ahead of it (processing or first)."""


class MessagesPage(msgspec.Struct, kw_only=True, frozen=True):
    """One page of ``GET /queues/{name}/messages``; pass ``next_cursor`` to get the next."""

    messages: list[MessageView]
    next_cursor: int | None = None


class AckRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /messages/ack``."""

    ids: Annotated[list[int], msgspec.Meta(min_length=1)]


class NackRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /messages/nack``; ``reason`` is kept as the message's ``last_error``."""

    ids: Annotated[list[int], msgspec.Meta(min_length=1)]
    requeue: bool = True
    reason: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    delay_ms: DelayMillis | None = None
    """Wait this long before it goes again (a requeue only), instead of the queue's ``retry``."""


class RescheduleRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``PATCH /queues/{name}/messages/{id}``: when a pending message goes, and how.

    Give ``deliver_at`` or ``delay_ms`` (from now; 0 or a past instant: at
    once), ``priority``, or both; a field left out keeps its value.
    """

    deliver_at: datetime | None = None
    delay_ms: DelayMillis | None = None
    priority: Priority | None = None


class PauseRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /queues/{name}/pause`` (optional): resume by itself at ``until``."""

    until: datetime | None = None


class TouchRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /messages/{id}/touch``: the lease's new length from now, in seconds."""

    lease: Seconds


class SettleResult(msgspec.Struct, kw_only=True, frozen=True):
    """Outcome of a batch ack/nack: the ids settled and those that were not, with why."""

    settled: list[int]
    errors: dict[str, str] = msgspec.field(default_factory=dict)


class SettledResponse(msgspec.Struct, kw_only=True, frozen=True):
    """The one message an ack or nack settled."""

    message_id: int
    status: str


class PurgeResponse(msgspec.Struct, kw_only=True, frozen=True):
    """How many pending messages a purge deleted."""

    purged: int


class ConsumerInfo(msgspec.Struct, kw_only=True, frozen=True):
    """A push consumer as operators see it (``GET /consumers``)."""

    queue: str
    consumer_id: int
    label: str
    prefetch: int
    unacked: int
    connected_at: datetime
    oldest_lease_held_s: float | None = None
    """How long the oldest unacked delivery has been held, in seconds."""


class QueueEvent(msgspec.Struct, kw_only=True, frozen=True):
    """Something that happened in a queue, for dashboards (``queueEvents``).

    ``type`` is one of ``published``, ``delivered``, ``acked``, ``nacked``,
    ``failed``, ``dead_lettered``, ``dropped``, ``queue_created``,
    ``queue_deleted``, ``queue_purged``.
    """

    type: str
    queue: str
    at: float
    message_id: int | None = None
    detail: str | None = None


class _Identified(msgspec.Struct, gc=False, eq=False):
    """The id, `Entry`'s one positional field (a base class keeps it out of ``kw_only``)."""

    id: int


class Entry(_Identified, kw_only=True, gc=False, eq=False):
    """The broker's in-memory record of one message (queue state and storage share it).

    ``content`` is ``None`` while the body lives only in storage (a cold entry
    hydrated without its body is never delivered). Mutable: it is the one
    per-message object on the hot path, built as ``Entry(id, content=...,
    ...)``.

    A struct the garbage collector never tracks (``gc=False``; it refers to
    nothing that could refer back to it): with a backlog of pending messages
    the collector's full passes would otherwise walk every entry, and each
    body it points to, taking tens of milliseconds each time the backlog
    grew by a quarter (``python -m benchmarks.gc_pauses``). ``eq=False``
    keeps identity equality and hashing, as for the objects they are.
    """

    content: bytes | None
    size: int
    created_at: float
    priority: int = 0
    headers: dict[str, str] | None = None
    attempt: int = 0
    redelivered: bool = False
    deliver_at: float = 0.0
    expires_at: float = 0.0
    dedup_id: str | None = None
    dead_lettered_from: str | None = None
    last_error: str | None = None
    consumer: int | None = None
    lease_deadline: float = 0.0
    delivered_at: float = 0.0
    group: str | None = None

    def __repr__(self) -> str:
        return f"<Entry {self.id} p{self.priority} attempt={self.attempt}>"

    def view(self, queue: str, status: str, now: float | None = None) -> MessageView:
        """Return the wire view of this entry (``content`` must be loaded).

        With ``now``, a pending message due later says why it waits (``waiting``).
        """
        assert self.content is not None, "a view needs the body"
        return MessageView(
            message_id=self.id,
            queue=queue,
            status=status,
            content=msgspec.Raw(self.content),
            headers=self.headers,
            priority=self.priority,
            attempt=self.attempt,
            redelivered=self.redelivered,
            created_at=from_timestamp(self.created_at),
            deliver_at=from_timestamp(self.deliver_at) if self.deliver_at else None,
            expires_at=from_timestamp(self.expires_at) if self.expires_at else None,
            lease_expires_at=from_timestamp(self.lease_deadline) if self.lease_deadline else None,
            dead_lettered_from=self.dead_lettered_from,
            last_error=self.last_error,
            waiting=None if now is None else _waiting(self, status, now),
            group=self.group,
        )


def _waiting(entry: Entry, status: str, now: float) -> str | None:
    """``retry_backoff`` for a pending message given back and due later, ``delayed`` if never."""
    if status != "pending" or entry.deliver_at <= now:
        return None
    return "retry_backoff" if entry.attempt else "delayed"


class AckBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Optional body of ``POST /messages/{id}/ack``: the ``result`` (any JSON) to keep.

    Left out or ``null``: no result.
    """

    result: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class MessageResult(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /messages/{id}/result``: a processed or failed message's outcome."""

    message_id: int
    queue: str
    status: str
    result: msgspec.Raw | None = None
    last_error: str | None = None

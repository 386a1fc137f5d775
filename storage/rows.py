"""The rows both backends store: columns, status codes, and their mapping to entries and queues.

A row is a flat sequence in `ENTRY_COLUMNS` order. SQLite and PostgreSQL
store the same columns (the dialects differ in types only: ``INTEGER``
versus ``boolean`` for ``redelivered``, ``BLOB`` versus ``bytea``), so
turning an `Entry` into a row and a row back into a `StoredMessage` (or,
at replay, a delayed message's row into a body-less `Entry`; a queue's row
into a `StoredQueue`) is written once, here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from broker_core.journal import StoredMessage, StoredQueue
from broker_core.messages import Entry, QueueOptions
from broker_core.types import MessageStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "COLUMN_INDEX",
    "DELAYED_COLUMNS",
    "ENDED",
    "ENTRY_COLUMNS",
    "FAILED",
    "INSERT_COLUMNS",
    "NO_HORIZON",
    "PENDING",
    "PROCESSED",
    "PROCESSING",
    "QUEUE_COLUMNS",
    "DeliveryHorizon",
    "decode_options",
    "delayed_entry",
    "encode_options",
    "insert_row",
    "stored_message",
    "stored_queue",
]

ENTRY_COLUMNS: tuple[str, ...] = (
    "id", "queue", "status", "priority", "attempt", "redelivered", "created_at", "deliver_at",
    "expires_at", "lease_deadline", "size", "content", "headers", "dedup_id", "last_error",
    "dead_lettered_from", "settled_at", "msg_group",
)  # fmt: skip
"""The columns of a message row, in the order of `insert_row` and of every ``SELECT``."""

DELAYED_COLUMNS = (
    "id, priority, size, created_at, deliver_at, expires_at, attempt, redelivered, msg_group"
)
"""What a replay reads of a delayed message (no body: read when due), for `delayed_entry`."""
QUEUE_COLUMNS = "name, options, created_at, updated_at, processed"
"""What a queue's row holds, in the order of `stored_queue`."""

INSERT_COLUMNS: tuple[str, ...] = (*ENTRY_COLUMNS, "history")
"""The columns an insert writes: the entry's, then its history (`broker_core.history`), which
only history reads select."""
COLUMN_INDEX: dict[str, int] = {column: index for index, column in enumerate(INSERT_COLUMNS)}
"""Where each column sits in a row."""

PENDING, PROCESSING, PROCESSED, FAILED, ENDED = (
    int(MessageStatus.PENDING),
    int(MessageStatus.PROCESSING),
    int(MessageStatus.PROCESSED),
    int(MessageStatus.FAILED),
    int(MessageStatus.ENDED),
)

_headers_encoder = msgspec.json.Encoder()
_headers_decoder = msgspec.json.Decoder(dict[str, str])
_options_decoder = msgspec.json.Decoder(QueueOptions)


def insert_row(queue: str, entry: Entry) -> list[Any]:
    """The row of a message just published to ``queue`` (a list: coalescing patches it in place)."""
    headers = _headers_encoder.encode(entry.headers) if entry.headers else None
    return [
        entry.id, queue, PENDING, entry.priority, 0, False, entry.created_at,
        entry.deliver_at, entry.expires_at, 0.0, entry.size, entry.content, headers,
        entry.dedup_id, None, None, 0.0, entry.group, None,
    ]  # fmt: skip


class DeliveryHorizon(NamedTuple):
    """What an unclean stop may have delivered without a record.

    Deliveries are written behind, so after an unclean stop every pending
    message at or below ``id`` (the last id committed then) and due by
    ``at`` (the moment of recovery) may have reached a consumer. Reading
    rows through the horizon marks them redelivered without rewriting a
    million rows at start; later unclean stops only move it forward.
    """

    id: int = 0
    at: float = 0.0

    def covers(self, id: int, deliver_at: float) -> bool:
        """Whether a pending message may have been delivered before an unclean stop."""
        return id <= self.id and deliver_at <= self.at

    def after_unclean_stop(self, last_id: int, now: float) -> DeliveryHorizon:
        """The horizon once one more unclean stop is recovered."""
        return DeliveryHorizon(max(self.id, last_id), max(self.at, now))


NO_HORIZON = DeliveryHorizon()


def stored_message(row: Sequence[Any], horizon: DeliveryHorizon = NO_HORIZON) -> StoredMessage:
    """The message a row read back in `ENTRY_COLUMNS` order holds."""
    (id, queue, status, priority, attempt, redelivered, created_at, deliver_at, expires_at,
     lease_deadline, size, content, headers, dedup_id, last_error, dead_lettered_from,
     _settled_at, group) = row  # fmt: skip
    entry = Entry(
        id,
        # An ended message's body is released: it shows as JSON ``null``.
        content=b"null" if status == ENDED else bytes(content),
        size=size,
        created_at=created_at,
        priority=priority,
        headers=_headers_decoder.decode(headers) if headers is not None else None,
        attempt=attempt,
        redelivered=bool(redelivered) or (status == PENDING and horizon.covers(id, deliver_at)),
        deliver_at=deliver_at,
        expires_at=expires_at,
        dedup_id=dedup_id,
        dead_lettered_from=dead_lettered_from,
        last_error=last_error,
        group=group,
    )
    entry.lease_deadline = lease_deadline if status == PROCESSING else 0.0
    return StoredMessage(queue, MessageStatus(status), entry)


def delayed_entry(row: Sequence[Any], horizon: DeliveryHorizon = NO_HORIZON) -> Entry:
    """The body-less entry of a delayed message, from a row read in `DELAYED_COLUMNS` order."""
    id, priority, size, created_at, deliver_at, expires_at, attempt, redelivered, group = row
    return Entry(
        id,
        content=None,
        size=size,
        created_at=created_at,
        priority=priority,
        deliver_at=deliver_at,
        expires_at=expires_at,
        attempt=attempt,
        redelivered=bool(redelivered) or horizon.covers(id, deliver_at),
        group=group,
    )


def stored_queue(row: Sequence[Any], failed: int) -> StoredQueue:
    """A queue as stored, from a row in `QUEUE_COLUMNS` order and its count of failed messages."""
    name, options, created_at, updated_at, processed = row
    return StoredQueue(
        name=name,
        options=decode_options(options),
        created_at=created_at,
        updated_at=updated_at,
        processed=processed,
        failed=failed,
    )


def encode_options(options: QueueOptions) -> bytes:
    """A queue's options as stored (JSON)."""
    return msgspec.json.encode(options)


def decode_options(stored: bytes | str) -> QueueOptions:
    """A queue's options read back."""
    return _options_decoder.decode(stored)

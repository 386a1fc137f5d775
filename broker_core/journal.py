"""What the core writes to and reads from storage: journal operations and the `Journal` protocol.

A queue's state emits operations (`Insert`, `Deliver`, ...) into an outbox;
its actor hands them to the journal, which buffers them and commits them in
batches (group commit). The order of operations is the order of the buffer,
across queues, so a later operation never lands before an earlier one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

import msgspec

from .messages import Entry, QueueOptions

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence

    from .types import MessageStatus

__all__ = [
    "Ack",
    "DeadLetter",
    "DeleteQueue",
    "Deliver",
    "Drop",
    "Fail",
    "Insert",
    "Journal",
    "Op",
    "PurgeQueue",
    "PutQueue",
    "ReplayedQueue",
    "Requeue",
    "Restore",
    "Storage",
    "StoredMessage",
    "StoredQueue",
]


class Insert(msgspec.Struct, frozen=True, gc=False):
    """A published message (its entry still holds the body until the batch is flushed)."""

    queue: str
    entry: Entry


class Deliver(msgspec.Struct, frozen=True, gc=False):
    """A message was leased to a consumer: it is ``processing`` with ``attempt`` deliveries."""

    id: int
    attempt: int
    lease_deadline: float


class Requeue(msgspec.Struct, frozen=True, gc=False):
    """A message went back to ``pending`` (nack, lease expiry, consumer gone), redelivered."""

    id: int
    attempt: int


class Ack(msgspec.Struct, frozen=True, gc=False):
    """A message was acknowledged: it is ``processed`` (kept for browsing until pruned)."""

    queue: str
    id: int
    at: float


class Fail(msgspec.Struct, frozen=True, gc=False):
    """A message gave up (nack without requeue, attempts exhausted) and has no dead-letter queue."""

    queue: str
    id: int
    reason: str
    at: float


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    """A message moved to another queue's ``pending`` with its history and attempt reset."""

    id: int
    source: str
    target: str
    reason: str


class Drop(msgspec.Struct, frozen=True, gc=False):
    """A message is deleted without trace (expired or dropped with no dead-letter queue)."""

    id: int


class Restore(msgspec.Struct, frozen=True, gc=False):
    """A failed or dead-lettered message is moved (back) to ``queue``'s ``pending``, attempt 0."""

    id: int
    queue: str


class PutQueue(msgspec.Struct, frozen=True, gc=False):
    """A queue was created or its options changed."""

    name: str
    options: QueueOptions
    created_at: float
    updated_at: float


class DeleteQueue(msgspec.Struct, frozen=True, gc=False):
    """A queue and all its messages are gone."""

    name: str


class PurgeQueue(msgspec.Struct, frozen=True, gc=False):
    """All ``pending`` messages of a queue (delayed ones included) are deleted."""

    name: str


Op = (
    Insert
    | Deliver
    | Requeue
    | Ack
    | Fail
    | DeadLetter
    | Drop
    | Restore
    | PutQueue
    | DeleteQueue
    | PurgeQueue
)


class StoredQueue(msgspec.Struct, frozen=True, kw_only=True):
    """A queue as storage keeps it, with the counts it needs at start."""

    name: str
    options: QueueOptions
    created_at: float
    updated_at: float
    processed: int = 0
    failed: int = 0


class ReplayedQueue(msgspec.Struct, kw_only=True):
    """What a queue's actor is rebuilt from at start.

    ``cold`` holds ``(id, priority, size)`` of each message that waits in
    ``pending`` order (bodies stay in storage); ``delayed`` holds entries with a
    future ``deliver_at`` (no body). Messages that were ``processing`` are back
    in ``cold``, marked redelivered in storage. ``dedup`` holds
    ``(dedup_id, id, created_at)`` of the messages still inside the
    deduplication window, so a restart doesn't forget them.
    """

    cold: list[tuple[int, int, int]]
    delayed: list[Entry]
    dedup: list[tuple[str, int, float]] = msgspec.field(default_factory=list)


class Journal(Protocol):
    """The storage the core writes through and reads back from.

    ``write`` is synchronous and cheap: it appends to the write-behind buffer
    and returns the future of the batch the operations joined, done once that
    batch committed (or failed with `broker_core.errors.Unavailable`).
    """

    def write(self, ops: Sequence[Op]) -> asyncio.Future[None]:
        """Buffer ``ops``; return the commit future of their batch.

        With no ``ops``, return a future done once everything written before
        has committed (done at once when nothing is pending).
        """
        ...

    async def load_entries(self, ids: Sequence[int]) -> list[Entry]:
        """Return the stored entries (with bodies) of those ``ids`` still pending."""
        ...


class StoredMessage(NamedTuple):
    """One message read back from storage, with the queue and status it has there."""

    queue: str
    status: MessageStatus
    entry: Entry


class Storage(Journal, Protocol):
    """The whole storage contract: the `Journal` plus start-up replay and reads.

    Reads wait for the operations already written to commit, so a client
    reads its own writes.
    """

    @property
    def degraded(self) -> str | None:
        """Why writes fail now (publishes are refused), or ``None`` when they commit."""
        ...

    async def open(self) -> bool:
        """Open (creating or migrating the schema); return whether the last stop was clean."""
        ...

    async def close(self) -> None:
        """Flush the buffer, mark the stop clean and close."""
        ...

    async def flush(self) -> None:
        """Wait until everything written so far has committed."""
        ...

    async def last_message_id(self) -> int:
        """The highest message id ever stored (0 for none)."""
        ...

    async def load_queues(self) -> list[StoredQueue]:
        """Every queue with its options and counts."""
        ...

    async def replay(self, queue: str, now: float, dedup_window_s: float = 0.0) -> ReplayedQueue:
        """The pending order of ``queue`` at start (see `ReplayedQueue`)."""
        ...

    async def get_message(self, id: int) -> StoredMessage | None:
        """One message by id, in whatever status."""
        ...

    async def browse(
        self, queue: str, status: MessageStatus | None, limit: int, after: int | None
    ) -> list[StoredMessage]:
        """Messages of ``queue`` by ascending id, after the ``after`` cursor."""
        ...

    async def prune(self, now: float) -> int:
        """Delete processed messages past their retention; return how many."""
        ...

    async def prune_failed(self, before: float) -> dict[str, int]:
        """Delete failed messages settled before ``before``; return how many per queue."""
        ...

    async def retryable_ids(self, queue: str, limit: int) -> list[int]:
        """Ids in ``queue`` that a redrive moves: failed ones and dead-lettered pending ones."""
        ...

"""What the core writes to and reads from storage: journal operations and the `Journal` protocol.

A queue's state emits operations (`Insert`, `DeliverOp`, ...) into an outbox;
its actor hands them to the journal, which buffers them and commits them in
batches (group commit). The order of operations is the order of the buffer,
across queues, so a later operation never lands before an earlier one.

`DeliverOp` and `AckOp` carry an ``Op`` suffix: the WebSocket frames
``deliver`` and ``ack`` are other things (`frames.Deliver`, `frames.Ack`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

import msgspec

from .history import History, SetResult
from .messages import Entry, QueueOptions

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Sequence

    from .types import MessageStatus

__all__ = [
    "AckOp",
    "Change",
    "DeadLetter",
    "DeleteQueue",
    "DeliverOp",
    "Drop",
    "Fail",
    "FireSchedule",
    "Insert",
    "Journal",
    "Op",
    "PurgeQueue",
    "PutQueue",
    "QueueCounts",
    "Release",
    "ReplayedQueue",
    "Requeue",
    "Reschedule",
    "Restore",
    "SharedStorage",
    "Storage",
    "StoredMessage",
    "StoredQueue",
    "Trim",
]


class Insert(msgspec.Struct, frozen=True, gc=False):
    """A published message (its entry still holds the body until the batch is flushed)."""

    queue: str
    entry: Entry
    origin: str = ""
    """Who published it over what, for its history (`history.publisher`)."""
    claimed: float = 0.0
    """On shared storage: the lease deadline of the publishing node's own claim, written
    with the row (processing, owned by the node, its delivery counted), so that no other
    node claims it and no claim round trip follows the commit; 0: pending, for any node."""


class DeliverOp(msgspec.Struct, frozen=True, gc=False):
    """A message was leased to a consumer: it is ``processing`` with ``attempt`` deliveries."""

    id: int
    attempt: int
    lease_deadline: float
    consumer: int | None = None
    created: float = 0.0
    """The message's ``created_at`` (its history's times count from it), 0 if unknown."""


class Requeue(msgspec.Struct, frozen=True, gc=False):
    """A message went back to ``pending`` (nack, lease expiry, consumer gone), redelivered.

    ``deliver_at`` is when it goes again after a back-off (`retry`), 0 at once.
    """

    id: int
    attempt: int
    queue: str
    deliver_at: float = 0.0
    trigger: str = "nack"
    reason: str | None = None
    created: float = 0.0
    """The message's ``created_at`` (its history's times count from it), 0 if unknown."""


class Reschedule(msgspec.Struct, frozen=True, gc=False):
    """A pending message of ``queue`` is due at ``deliver_at`` (0: now) with ``priority``."""

    id: int
    queue: str
    deliver_at: float
    priority: int


class Release(msgspec.Struct, frozen=True, gc=False):
    """A message claimed from shared storage went back to ``pending`` undelivered (as it was)."""

    queue: str
    id: int
    attempt: int


class AckOp(msgspec.Struct, frozen=True, gc=False):
    """A message was acknowledged: it is ``processed`` (kept for browsing until pruned)."""

    queue: str
    id: int
    at: float
    grouped: bool = False
    """It had a group: on shared storage the group's next message may now be claimed."""
    created: float = 0.0
    """The message's ``created_at`` (its history's times count from it), 0 if unknown."""


class Fail(msgspec.Struct, frozen=True, gc=False):
    """A message gave up (nack without requeue, attempts exhausted) and has no dead-letter queue."""

    queue: str
    id: int
    reason: str
    at: float
    grouped: bool = False
    created: float = 0.0
    """The message's ``created_at`` (its history's times count from it), 0 if unknown."""


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    """A message moved to another queue's ``pending`` with its history and attempt reset."""

    id: int
    source: str
    target: str
    reason: str
    grouped: bool = False
    created: float = 0.0
    """The message's ``created_at`` (its history's times count from it), 0 if unknown."""


class Drop(msgspec.Struct, frozen=True, gc=False):
    """A message leaves its queue for good (expired, dropped, cancelled; no dead-letter queue).

    With a ``why`` (``expired``, ``cancelled``, else a drop's reason such as
    ``maxlen``) it ends: storage keeps a body-less row of status ``ENDED``
    (``last_error`` = ``why``) for the processed retention, so that its
    history stays readable; it counts nowhere. Without one (a publish
    withdrawn after a failed commit) its row is deleted.
    """

    id: int
    why: str = ""
    by: str | None = None
    """Who cancelled it, for its history."""
    created: float = 0.0
    """The message's ``created_at`` (its history's times count from it), 0 if unknown."""


class Restore(msgspec.Struct, frozen=True, gc=False):
    """A failed or dead-lettered message is moved (back) to ``queue``'s ``pending``, attempt 0."""

    id: int
    queue: str
    by: str | None = None
    created: float = 0.0
    """The message's ``created_at`` (its history's times count from it), 0 if unknown."""


class Trim(msgspec.Struct, frozen=True, gc=False):
    """Shared storage: make room in ``queue`` by its oldest pending messages (``drop_head``).

    At least ``count`` messages and ``size`` bytes go, oldest first, to
    ``target`` (the dead-letter queue, reason ``maxlen``), or are deleted
    when it is ``None``. A node's state can't do it itself: the oldest
    messages are in the database, not in its memory.
    """

    queue: str
    count: int
    size: int
    target: str | None


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


class FireSchedule(msgspec.Struct, frozen=True, gc=False):
    """Schedule ``name`` of ``queue`` fired message ``id`` for ``instant``.

    Always in the batch of the message's `Insert`, so the message and the
    record of its instant commit together or not at all
    (`scheduler.Scheduler`). Shared storage writes it as a compare-and-set:
    when the schedule already fired ``instant`` (or a later one), or is
    gone, the message is deleted in the same transaction.
    """

    queue: str
    name: str
    instant: float
    id: int


Op = (
    Insert
    | DeliverOp
    | Requeue
    | Reschedule
    | Release
    | AckOp
    | Fail
    | DeadLetter
    | Drop
    | Restore
    | PutQueue
    | DeleteQueue
    | PurgeQueue
    | Trim
    | FireSchedule
    | History
    | SetResult
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

    ``cold`` holds each message that waits in ``pending`` order as one int
    packing ``(id, priority, size)`` (`broker_core.pending.pack_cold`: the
    same int the pending order keeps, so a backlog of millions is read back
    without a tuple per message); bodies stay in storage. ``delayed`` holds entries with a
    future ``deliver_at`` (no body). Messages that were ``processing`` are back
    in ``cold``, marked redelivered in storage. ``dedup`` holds
    ``(dedup_id, id, created_at)`` of the messages still inside the
    deduplication window, so a restart doesn't forget them.
    """

    cold: list[int]
    delayed: list[Entry]
    dedup: list[tuple[str, int, float]] = msgspec.field(default_factory=list)
    grouped: list[int] = msgspec.field(default_factory=list)
    """The ready messages of a group, packed as ``cold``'s, in id order."""
    group_names: list[str] = msgspec.field(default_factory=list)
    """The group of each of ``grouped`` (one string object per group, shared)."""


class Journal(Protocol):
    """The storage the core writes through and reads back from.

    ``write`` is synchronous and cheap: it appends to the write-behind buffer
    and returns the future of the batch the operations joined, done once that
    batch committed (or failed with `broker_core.errors.Unavailable`). A
    failed batch's `Insert` ops are never stored, not even by a retry: a
    publish answered with an error is not and never will be stored.
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
    def shared(self) -> bool:
        """Whether several broker nodes share this storage (then it is a `SharedStorage`)."""
        ...

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

    async def history(self, id: int) -> tuple[float, str | None] | None:
        """The ``created_at`` and stored history of message ``id`` (`history.decode` reads them)."""
        ...

    async def result(self, id: int) -> bytes | None:
        """The JSON result the ack of message ``id`` carried, if any."""
        ...

    async def browse(
        self, queue: str, status: MessageStatus | None, limit: int, after: int | None
    ) -> list[StoredMessage]:
        """Messages of ``queue`` by ascending id, after the ``after`` cursor."""
        ...

    async def prune(self, now: float) -> int:
        """Delete processed and ended messages past their retention; return how many."""
        ...

    async def prune_failed(self, before: float) -> dict[str, int]:
        """Delete failed messages settled before ``before``; return how many per queue."""
        ...

    async def retryable_ids(self, queue: str, limit: int) -> list[int]:
        """Ids in ``queue`` that a redrive moves: failed ones and dead-lettered pending ones."""
        ...


class Change(NamedTuple):
    """What another node (or this one) changed in shared storage, told to every node.

    ``kind`` is ``"messages"`` (``name`` is a queue that got ready messages, or
    will at ``at`` for a delayed one; ``at`` is 0 for now), ``"queue"`` (a
    queue was created, changed or deleted) or ``"user"`` (a user changed).
    ``"touch"`` tells the node holding message ``id`` that its lease now
    ends at ``at`` (a REST touch sent to another node).
    ``"dedup"`` tells that message ``id`` of queue ``name`` was published at
    ``at`` with the ``dedup_id`` ``key``, so that every node's window knows it.
    ``"resync"`` asks every queue to look for ready messages (a periodic
    fallback); ``"reconnected"`` means notifications may have been missed;
    ``"rejoined"`` that this node has a new identity and slot. ``"result"``
    tells that message ``id`` got an ack result (its waiters wake).
    """

    kind: str
    name: str
    at: float = 0.0
    id: int = 0
    key: str = ""


class QueueCounts(NamedTuple):
    """A queue's message counts as storage holds them (every node's share)."""

    pending: int = 0
    delayed: int = 0
    pending_bytes: int = 0
    processing: int = 0
    processed: int = 0
    failed: int = 0


class SharedStorage(Storage, Protocol):
    """A storage that several broker nodes serve the same queues from (PostgreSQL).

    The database, not a node's actor, owns the pending order and the leases:
    an actor claims ready messages for its own consumers (`claim`), and its
    journal writes only touch messages this node holds. Every node learns
    of new ready messages and of queue and user changes through `watch`.
    """

    @property
    def node_name(self) -> str:
        """This node's name (``/stats`` and the node table)."""
        ...

    @property
    def node_slot(self) -> int:
        """This node's slot (0-1023) among the live nodes: part of the message ids it makes."""
        ...

    def watch(self, callback: Callable[[Change], None]) -> None:
        """Call ``callback`` with every `Change` (it must not block)."""
        ...

    async def claim(
        self, queue: str, count: int, now: float, lease_s: float = 30.0, group_concurrency: int = 1
    ) -> list[Entry]:
        """Lease up to ``count`` ready messages of ``queue`` to this node, in delivery order.

        A message of a group is claimed only when fewer than
        ``group_concurrency`` earlier messages of its group are pending or
        processing (on any node).

        The lease deadline storage records is ``now + lease_s`` (the queue's
        lease; the node keeps each delivery's own and ends it when due).

        Storage records the delivery (processing, attempt counted): the
        actor doesn't write its `DeliverOp`s to a shared storage.
        """
        ...

    async def recent_dedup(self, queue: str, since: float) -> list[tuple[str, int, float]]:
        """``(dedup_id, id, created_at)`` of the messages of ``queue`` published since ``since``."""
        ...

    async def counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        """Message counts of ``queues`` (all nodes' messages)."""
        ...

    async def purge_ready(self, queue: str) -> int:
        """Delete the pending messages of ``queue`` now; return how many."""
        ...

    async def touch_elsewhere(
        self, id: int, deadline: float, allowed: Callable[[str], bool] | None
    ) -> bool:
        """Extend to ``deadline`` the lease of a message another node holds; tell that node.

        Returns whether a processing message (of a queue ``allowed`` accepts) was found.
        """
        ...

    async def shared_secret(self, key: str, generate: Callable[[], str]) -> str:
        """A secret all nodes share (the JWT signing key), made with ``generate`` by the first."""
        ...

    async def settle_elsewhere(
        self,
        ids: Sequence[int],
        outcome: Callable[[StoredMessage], Op | None],
        record: Callable[[Sequence[Op]], Op | None] | None = None,
    ) -> list[tuple[str, int]]:
        """Settle messages another node holds (a REST ack or nack sent to this node).

        ``outcome`` turns each held message into the op that settles it (or
        ``None`` to leave it); ``record`` gives the history those ops
        record, written with them; returns ``(queue, id)`` of those settled.
        """
        ...

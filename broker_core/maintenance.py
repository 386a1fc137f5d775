"""`Maintenance`: what operators do to a queue's stored messages: browse, retry, redrive, prune.

These read storage and move failed or dead-lettered messages back; every
change to a queue's state goes through that queue's actor (`QueueActor.call`).
`Broker` exposes them under the same names.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING

from .cluster import MAX_MESSAGE_ID
from .errors import BrokerError, InvalidTransition, MessageNotFound
from .group_views import with_group_wait
from .history import actor
from .messages import MessagesPage
from .types import MessageStatus
from .waiting import explain

if TYPE_CHECKING:
    from .broker import Broker
    from .messages import MessageView

__all__ = ["Maintenance"]


class Maintenance:
    """Browse, retry, redrive and prune the stored messages of a `Broker`'s queues."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._storage = broker.storage
        self._retrying: set[int] = set()

    async def browse(
        self, name: str, status: MessageStatus | None, limit: int, cursor: int | None
    ) -> MessagesPage:
        """A page of a queue's messages by ascending id."""
        leases = self._broker.leases(name)
        state = self._broker.actor(name).state
        now = self._broker.clock()
        if cursor is not None:
            cursor = min(cursor, MAX_MESSAGE_ID)
        rows = await self._storage.browse(name, status, limit + 1, cursor)
        page = rows[:limit]
        views = []
        for row in page:
            entry = row.entry
            # Storage may lag the lease: the live one says when it ends.
            live = leases.get(entry.id)
            if live is not None:
                entry.lease_deadline = live.lease_deadline
                entry.attempt = live.attempt
            views.append(with_group_wait(entry.view(name, row.status.label, now), state))
        next_cursor = page[-1].entry.id if len(rows) > limit and page else None
        views = explain(self._broker.find_actor(name), views, now)
        return MessagesPage(messages=views, next_cursor=next_cursor)

    async def get_message(self, name: str, id: int) -> MessageView:
        """One message of a queue by id.

        A message cancelled, expired or dropped (no dead-letter queue) reads,
        until pruned with the processed ones, as status ``ended`` with why in
        ``last_error`` (``cancelled``, ``expired``, ``maxlen``...) and a
        ``null`` body (released); its history says who and when.
        """
        self._broker.actor(name)
        if not 0 < id <= MAX_MESSAGE_ID:
            raise MessageNotFound(id)
        row = await self._storage.get_message(id)
        if row is None or row.queue != name:
            raise MessageNotFound(id)
        now = self._broker.clock()
        actor = self._broker.actor(name)
        view = with_group_wait(row.entry.view(name, row.status.label, now), actor.state)
        [view] = explain(actor, [view], now)
        return view

    async def retry(self, name: str, id: int) -> MessageView:
        """Move a failed or dead-lettered message of ``name`` back to pending.

        A dead-lettered message goes back to the queue it came from (if that
        queue still exists), any other failed message to ``name`` itself, with
        its attempt count reset.
        """
        broker = self._broker
        source = broker.actor(name)
        if not 0 < id <= MAX_MESSAGE_ID:
            raise MessageNotFound(id)
        if id in self._retrying:
            raise InvalidTransition(id, "retry", "being retried")
        self._retrying.add(id)
        try:
            await self._storage.flush()
            row = await self._storage.get_message(id)
            if row is None or row.queue != name:
                raise MessageNotFound(id)
            entry = row.entry
            origin = entry.dead_lettered_from
            target = name
            if origin is not None and broker.find_actor(origin) is not None:
                target = origin
            if row.status is MessageStatus.PENDING and origin is None:
                raise InvalidTransition(id, "retry", "pending")
            if row.status not in (MessageStatus.PENDING, MessageStatus.FAILED):
                raise InvalidTransition(id, "retry", row.status.label)
            failed = row.status is MessageStatus.FAILED
            by, created = actor(), entry.created_at
            await source.call(
                lambda state, _: state.take_for_retry(id, failed, target, by, created)
            )
            entry.attempt = 0
            entry.redelivered = False
            entry.dead_lettered_from = None
            entry.deliver_at = 0.0
            entry.expires_at = 0.0  # its TTL ran with the first try; storage resets it too
            await broker.actor(target).call(lambda state, now: state.adopt(entry, now))
            return entry.view(target, "pending")
        finally:
            self._retrying.discard(id)

    async def prune(self, now: float, failed_retention_s: float) -> int:
        """Prune retained messages in storage; forget pruned failed ones in the counts.

        Processed messages go by the storage's retention settings; failed
        ones once settled ``failed_retention_s`` ago (0 keeps them). Returns
        how many messages were deleted.
        """
        deleted = await self._storage.prune(now)
        if failed_retention_s > 0:
            failed = await self._storage.prune_failed(now - failed_retention_s)
            for name, count in failed.items():
                actor = self._broker.find_actor(name)
                if actor is not None:
                    actor.cast(lambda state, _, n=count: state.forget_failed(n))  # type: ignore[misc]
                deleted += count
        return deleted

    async def redrive(self, name: str, limit: int = 1000) -> int:
        """`retry` every failed or dead-lettered message of ``name`` (up to ``limit``)."""
        self._broker.actor(name)
        await self._storage.flush()
        moved = 0
        for id in await self._storage.retryable_ids(name, limit):
            with suppress(BrokerError):
                await self.retry(name, id)
                moved += 1
        return moved

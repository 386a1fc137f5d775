"""What an operator does to a queue's waiting messages and deliveries: cancel, reschedule, pause.

A pending message is in its queue's actor, except on shared storage, where
it may wait in the database for any node to claim it: then the change is
written there (and a message a node has claimed counts as processing).
Pausing is a change of the queue's options, so it is stored, survives a
restart and reaches every node like any option change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import history
from .cluster import MAX_MESSAGE_ID
from .errors import InvalidTransition, MessageNotFound
from .messages import UpdateQueueRequest
from .types import MessageStatus

if TYPE_CHECKING:
    from datetime import datetime

    from .broker import Broker
    from .journal import StoredMessage
    from .messages import MessageView, QueueInfo

__all__ = ["cancel", "pause", "reschedule", "resume"]


async def _stored(broker: Broker, name: str, id: int, operation: str) -> StoredMessage:
    """The stored row of a message of ``name`` that must be pending (else 404 or 409)."""
    await broker.storage.flush()
    row = await broker.storage.get_message(id)
    if row is None or row.queue != name:
        raise MessageNotFound(id)
    if row.status is not MessageStatus.PENDING or not broker.storage.shared:
        raise InvalidTransition(id, operation, row.status.label)
    return row


async def cancel(broker: Broker, name: str, id: int) -> None:
    """Delete pending (or delayed, or backing off) message ``id`` of queue ``name``.

    Raises:
        QueueNotFound: no such queue.
        MessageNotFound: no such message in it.
        InvalidTransition: it is processing, processed, failed or ended (cancelled already).
    """
    actor = broker.actor(name)
    if not 0 < id <= MAX_MESSAGE_ID:
        raise MessageNotFound(id)
    by = history.actor()
    if await actor.call(lambda state, _: state.cancel(id, by), durable=True):
        return
    row = await _stored(broker, name, id, "cancel")
    created = row.entry.created_at
    await actor.call(lambda state, _: state.cancel_stored(id, by, created), durable=True)


async def reschedule(
    broker: Broker, name: str, id: int, deliver_at: float | None, priority: int | None
) -> MessageView:
    """Make pending message ``id`` due at ``deliver_at`` (``None``: unchanged) with ``priority``.

    Returns the message as it is now. Raises as `cancel`.
    """
    actor = broker.actor(name)
    if not 0 < id <= MAX_MESSAGE_ID:
        raise MessageNotFound(id)
    found = await actor.call(
        lambda state, now: state.reschedule(id, deliver_at, priority, now), durable=True
    )
    if not found:
        entry = (await _stored(broker, name, id, "reschedule")).entry
        at = entry.deliver_at if deliver_at is None else deliver_at
        level = entry.priority if priority is None else priority
        await actor.call(
            lambda state, now: state.reschedule_stored(id, at, level, now), durable=True
        )
    return await broker.get_message(name, id)


async def pause(broker: Broker, name: str, until: datetime | None = None) -> QueueInfo:
    """Hold the deliveries of queue ``name`` (until ``until``, else until `resume`).

    Publishes are still accepted, and leases already given run on.
    """
    return await broker.update_queue(name, UpdateQueueRequest(paused=True, paused_until=until))


async def resume(broker: Broker, name: str) -> QueueInfo:
    """Deliver again from queue ``name``."""
    return await broker.update_queue(name, UpdateQueueRequest(paused=False))

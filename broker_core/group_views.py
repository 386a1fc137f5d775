"""What queues show and do about message groups beyond the pending order (`groups`).

The queue view's per-group backlog, the ``waiting: "group"`` / ``blocked_by``
of a message held back by its group, and ``single_active_consumer``
dispatch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from .messages import MessageView
    from .queue import QueueState

__all__ = ["dispatch_single", "group_blocker", "group_figures", "with_group_wait"]


def group_figures(state: QueueState) -> dict[str, Any]:
    """``groups`` and ``largest_groups`` of a queue's view (`QueueInfo`)."""
    pending = state.pending
    if not pending.group_count:
        return {}
    largest = {group: size for group, size, _ in pending.group_backlog(10)}
    return {"groups": pending.group_count, "largest_groups": largest}


def group_blocker(state: QueueState, id: int, group: str) -> int | None:
    """The message that holds ready message ``id`` back in its group, or ``None``.

    It is the message just ahead of it in its group when that one cannot
    go either, else (at the head) the oldest of its group in flight or in
    back-off. Only what this node holds in memory is known (on shared
    storage, messages not claimed here show no blocker).
    """
    pending = state.pending
    index = pending.position(id, group)
    if index is None:
        return None
    free = pending.concurrency - pending.in_flight(group)
    if index < free:
        return None
    if index > 0:
        return pending.item_at(group, index - 1)
    holders = [e.id for e in state.processing.values() if e.group == group]
    holders += pending.held_of(group)
    return min(holders) if holders else None


def with_group_wait(view: MessageView, state: QueueState) -> MessageView:
    """``view`` with ``waiting: "group"`` and ``blocked_by`` when its group holds it back."""
    if view.status != "pending" or view.group is None or view.waiting is not None:
        return view
    blocker = group_blocker(state, view.message_id, view.group)
    if blocker is None:
        return view
    return msgspec.structs.replace(view, waiting="group", blocked_by=blocker)


def dispatch_single(state: QueueState, now: float) -> None:
    """``single_active_consumer``: deliver only to the consumer that joined first.

    The others stand by; when it leaves, what it held is requeued (in order,
    `QueueState.remove_consumer`) and the next in join order takes over.
    """
    active = next(iter(state.consumers), None)
    if active is None or active not in state._ready:
        return
    consumer = state.consumers[active]
    while consumer.credit > 0 and state.pending.count:
        entry = state._next_ready(now)
        if entry is None:
            break
        state._lease(entry, active, state.options.lease, now)
        consumer.held.add(entry.id)
        state._deliveries.append((active, entry))
    if consumer.credit <= 0:
        state._ready.remove(active)

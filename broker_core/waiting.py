"""Why a pending message waits: the ``waiting`` of its view, beyond its own schedule.

`messages.Entry.view` already says ``delayed`` and ``retry_backoff`` (the
message's own ``deliver_at``). What the queue does to it is said here, by
`RULES`, tried in order; the first that answers wins. Message groups add
their rule (``group``, with ``blocked_by``) at the front of `RULES`: the
extension point is that list and the `Rule` signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from .claims import SharedQueueState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .actor import QueueActor
    from .messages import MessageView

__all__ = ["RULES", "Rule", "explain"]

Rule = Callable[["QueueActor", "MessageView", float], "str | None"]
"""A rule: the reason a due pending message of the actor's queue waits, or ``None``."""


def _paused(actor: QueueActor, view: MessageView, now: float) -> str | None:
    return "paused" if actor.state.paused(now) else None


def _consumers(actor: QueueActor, view: MessageView, now: float) -> str | None:
    if isinstance(actor.state, SharedQueueState):
        # Consumers of other nodes are not known here: say nothing rather than wrong.
        return None
    consumers = actor.state.consumers
    if not consumers and not actor.waiting:
        return "no_consumer"
    if consumers and not actor.waiting and all(c.credit <= 0 for c in consumers.values()):
        return "consumers_full"
    return None


RULES: list[Rule] = [_paused, _consumers]
"""The rules of a pending, due message's ``waiting``, in order."""


def explain(
    actor: QueueActor | None, views: Sequence[MessageView], now: float
) -> list[MessageView]:
    """``views`` with ``waiting`` filled in for pending messages that are due."""
    if actor is None:
        return list(views)
    out = []
    for view in views:
        if view.status == "pending" and view.waiting is None:
            for rule in RULES:
                why = rule(actor, view, now)
                if why is not None:
                    view = msgspec.structs.replace(view, waiting=why)
                    break
        out.append(view)
    return out

"""Permission rules: what a user may see and do, as checks every transport calls.

`broker_core.auth.allowed` answers one question (may this user do this on
this queue?); these functions turn it into the rules of the public contract
(DESIGN.md, "Trust"), raising broker errors that ``transports/errors.py`` maps
to HTTP, WebSocket and GraphQL answers:

* a queue the caller has no permission on answers exactly like a missing one
  (`QueueNotFound`), so names can't be probed;
* on a queue it can see, a missing permission is `NotPermitted` (403);
* browsing needs ``consume`` or ``manage``; broker-wide operations need an
  enabled admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .auth import Action, allowed
from .errors import NotPermitted, QueueNotFound

if TYPE_CHECKING:
    from collections.abc import Callable

    from .auth import User

__all__ = [
    "may_consume",
    "require",
    "require_admin",
    "require_browse",
    "require_visible",
    "visible",
]


def visible(user: User, queue: str) -> bool:
    """Whether ``user`` may know ``queue`` exists (any permission on it)."""
    return any(allowed(user, action, queue) for action in Action)


def require_visible(user: User, queue: str) -> None:
    """Raise `QueueNotFound` unless ``user`` has some permission on ``queue``.

    A queue the caller may not touch answers exactly like a missing one, so
    names can't be probed.
    """
    if not visible(user, queue):
        raise QueueNotFound(queue)


def require(user: User, action: Action, queue: str) -> None:
    """Raise unless ``user`` may ``action`` on ``queue``.

    Raises:
        QueueNotFound: ``user`` can't see the queue (404).
        NotPermitted: it can see it but lacks ``action`` (403).
    """
    if not allowed(user, action, queue):
        require_visible(user, queue)
        raise NotPermitted(action.value, queue)


def require_browse(user: User, queue: str) -> None:
    """Raise unless ``user`` may browse ``queue``'s messages (``consume`` or ``manage``)."""
    if not (allowed(user, Action.CONSUME, queue) or allowed(user, Action.MANAGE, queue)):
        require(user, Action.CONSUME, queue)


def require_admin(user: User, action: str = "administer the broker") -> None:
    """Raise `NotPermitted` (saying ``action``) unless ``user`` is an enabled admin."""
    if not user.admin or user.disabled:
        raise NotPermitted(action)


def may_consume(user: User) -> Callable[[str], bool]:
    """The ``allowed`` filter of a settle by message id: queues ``user`` may consume from.

    A message of any other queue is refused like an unknown id (see
    `Broker.ack`), so ids can't be probed either.
    """
    return lambda queue: allowed(user, Action.CONSUME, queue)

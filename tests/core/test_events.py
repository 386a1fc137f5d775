"""`broker_core.events`: which journal operations make a queue event."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from broker_core.events import event_of
from broker_core.journal import Drop, PurgeQueue, Release, Restore

if TYPE_CHECKING:
    from broker_core.journal import Op


def test_a_drop_is_a_dropped_event() -> None:
    """A message deleted without trace makes a ``dropped`` event naming it."""
    event = event_of("jobs", Drop(id=7), 5.0)
    assert event is not None
    assert (event.type, event.queue, event.message_id, event.at) == ("dropped", "jobs", 7, 5.0)


@pytest.mark.parametrize(
    "op",
    [Release(queue="jobs", id=7, attempt=0), Restore(id=7, queue="jobs"), PurgeQueue(name="jobs")],
    ids=["release", "restore", "purge"],
)
def test_operations_without_an_event_make_none(op: Op) -> None:
    """A release, a restore or a queue operation makes no message event."""
    assert event_of("jobs", op, 5.0) is None

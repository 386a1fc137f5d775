"""`broker_core.errors`: each error's one-sentence message and the ids it carries."""

from __future__ import annotations

from broker_core.errors import NotPermitted


def test_not_permitted_names_the_action_and_the_queue() -> None:
    """A refusal on a queue says which action on which queue."""
    error = NotPermitted("publish", "orders")
    assert str(error) == "not permitted to publish on queue 'orders'"
    assert (error.action, error.queue) == ("publish", "orders")


def test_not_permitted_without_a_queue_names_the_action() -> None:
    """A refusal of an action on no queue (managing users) says just the action."""
    assert str(NotPermitted("manage users")) == "not permitted to manage users"

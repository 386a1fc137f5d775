"""The client's sans-I/O parts, driven synchronously: `ClientProtocol` and `Reconnect`."""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from transports.client.errors import ClosedError, RequestError
from transports.client.protocol import ClientProtocol
from transports.client.reconnect import Reconnect, Step
from transports.wire import (
    Authenticated,
    Confirm,
    Deliver,
    Error,
    Subscribed,
    Unsubscribed,
)

if TYPE_CHECKING:
    from transports.client.messages import Message


class Subscription:
    """A `ClientSubscription` stand-in recording what the protocol tells it."""

    def __init__(self, queue: str = "jobs", prefetch: int = 10) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self.server_id: int | None = None
        self.messages: list[Message] = []
        self.ended: list[BaseException | None] = []

    def _deliver(self, message: Message) -> None:
        self.messages.append(message)

    def _confirmed(self, server_id: int) -> None:
        self.server_id = server_id

    def _end(self, error: BaseException | None) -> None:
        self.ended.append(error)


class Settler:
    """Stands for the client that settles delivered messages."""

    async def settle(
        self,
        message: Message,
        ack: bool,
        requeue: bool = True,
        reason: str | None = None,
        delay_ms: int | None = None,
    ) -> None:
        raise AssertionError("not settled here")

    async def ack_with_result(self, message: Message, result: Any) -> None:
        raise AssertionError("not settled here")


@pytest.fixture
def protocol() -> ClientProtocol:
    protocol = ClientProtocol(Settler(), msgpack=False)
    protocol.connection_made()
    return protocol


def subscribed(protocol: ClientProtocol, server_id: int = 5) -> Any:
    """A subscription the broker confirmed as ``server_id``."""
    sub: Any = Subscription()
    protocol.subscribe(sub)
    protocol.subscribing_as(100 + server_id, sub)
    protocol.receive(
        Subscribed(queue="jobs", subscription=server_id, prefetch=10, ref=100 + server_id)
    )
    return sub


def deliver(server_id: int = 5, tag: int = 1) -> Deliver:
    """A deliver frame for subscription ``server_id``."""
    return Deliver(
        subscription=server_id,
        queue="jobs",
        tag=tag,
        message_id=40 + tag,
        content=msgspec.Raw(b'{"n":1}'),
        headers=None,
        attempt=1,
        redelivered=False,
    )


# -- publishes --------------------------------------------------------------------------


def test_a_confirm_answers_its_publish_with_the_message_id(protocol: ClientProtocol) -> None:
    """The waiter of the ref gets the id; the publish is no longer pending."""
    waiter: Future[int] = Future()
    protocol.publishing(1, b"frame", waiter)
    protocol.receive(Confirm(ref=1, message_id=42))
    assert waiter.result() == 42
    assert protocol.publishes == {}


def test_an_error_fails_its_publish(protocol: ClientProtocol) -> None:
    """An error frame with a publish's ref fails that publish with its code."""
    waiter: Future[int] = Future()
    protocol.publishing("p", b"frame", waiter)
    protocol.receive(Error(code="queue_full", detail="full", ref="p"))
    error = waiter.exception()
    assert isinstance(error, RequestError) and error.code == "queue_full"


def test_unconfirmed_publishes_are_sent_again_on_a_new_connection(
    protocol: ClientProtocol,
) -> None:
    """Their frames, in the order they were first sent."""
    protocol.publishing(1, b"one", Future())
    protocol.publishing(2, b"two", Future())
    protocol.receive(Confirm(ref=1, message_id=7))
    protocol.connection_lost()
    protocol.connection_made()
    assert protocol.unconfirmed() == [b"two"]


def test_failing_all_fails_publishes_and_ends_subscriptions(protocol: ClientProtocol) -> None:
    """Giving up: every waiter fails and every subscription ends with the error."""
    waiter: Future[int] = Future()
    protocol.publishing(1, b"one", waiter)
    sub = subscribed(protocol)
    error = ClosedError("gone")
    protocol.fail_all(error, closed=False)
    assert waiter.exception() is error
    assert sub.ended == [error]
    assert protocol.publishes == {} and protocol.subscriptions == set()


def test_closing_ends_subscriptions_without_an_error(protocol: ClientProtocol) -> None:
    """A subscription of a closed client just stops iterating."""
    sub = subscribed(protocol)
    protocol.fail_all(ClosedError("closed"), closed=True)
    assert sub.ended == [None]


# -- subscriptions ----------------------------------------------------------------------


def test_deliveries_go_to_their_subscription_with_the_connection_generation(
    protocol: ClientProtocol,
) -> None:
    """A message carries its tag and the generation of the connection it came on."""
    sub = subscribed(protocol)
    protocol.receive(deliver(tag=3))
    [message] = sub.messages
    assert (message.tag, message.message_id, message.generation) == (3, 43, 1)
    assert message.content == {"n": 1}


def test_deliveries_for_an_unknown_subscription_are_dropped(protocol: ClientProtocol) -> None:
    """A delivery racing an unsubscribe goes nowhere (the broker requeues it)."""
    sub = subscribed(protocol)
    protocol.receive(deliver(server_id=9))
    assert sub.messages == []


def test_a_refused_subscribe_ends_the_subscription_with_the_error(
    protocol: ClientProtocol,
) -> None:
    """An error with the subscribe's ref ends it and drops it from those made again."""
    sub: Any = Subscription()
    protocol.subscribe(sub)
    protocol.subscribing_as(7, sub)
    protocol.receive(Error(code="forbidden", detail="no", ref=7))
    [error] = sub.ended
    assert isinstance(error, RequestError) and error.code == "forbidden"
    assert protocol.connection_made() == []


def test_a_subscription_ended_by_the_server_ends_with_queue_not_found(
    protocol: ClientProtocol,
) -> None:
    """``unsubscribed`` without a ref: the queue was deleted under it."""
    sub = subscribed(protocol)
    protocol.receive(Unsubscribed(subscription=5, requeued=0, reason="queue deleted"))
    [error] = sub.ended
    assert isinstance(error, RequestError) and error.code == "queue_not_found"
    assert sub.server_id is None and protocol.subscriptions == set()


def test_a_new_connection_makes_subscriptions_again_under_new_server_ids(
    protocol: ClientProtocol,
) -> None:
    """The old server ids mean nothing on the new connection, and old messages are stale."""
    sub = subscribed(protocol)
    protocol.connection_lost()
    assert sub.server_id is None
    assert protocol.connection_made() == [sub]
    assert protocol.generation == 2
    protocol.receive(deliver(server_id=5))
    assert sub.messages == []


def test_unsubscribing_stops_deliveries_and_returns_the_server_id(
    protocol: ClientProtocol,
) -> None:
    """The server id is handed back once, for the ``unsubscribe`` frame."""
    sub = subscribed(protocol)
    protocol.unsubscribe(sub)
    assert protocol.unsubscribing(sub) == 5
    assert protocol.unsubscribing(sub) is None
    protocol.receive(deliver())
    assert sub.messages == []


# -- replies ----------------------------------------------------------------------------


def test_a_reply_answers_the_request_with_its_ref(protocol: ClientProtocol) -> None:
    """``authenticated`` and ``unsubscribed`` with a ref answer their waiter."""
    waiter: Future[Any] = Future()
    protocol.expect(3, waiter)
    frame = Authenticated(username="alice", expires_in=60.0, ref=3)
    protocol.receive(frame)
    assert waiter.result() is frame


def test_losing_the_connection_fails_the_requests_waiting(protocol: ClientProtocol) -> None:
    """A reply that can no longer come fails with `ClosedError`."""
    waiter: Future[Any] = Future()
    protocol.expect(3, waiter)
    protocol.connection_lost()
    assert isinstance(waiter.exception(), ClosedError)
    assert protocol.replies == {}


# -- reconnection -----------------------------------------------------------------------


def test_backoff_doubles_up_to_the_longest_delay() -> None:
    """0.1, 0.2, 0.4, then capped at 0.5 (times the jitter)."""
    policy = Reconnect((0.1, 0.5), reconnect=True)
    assert [round(policy.wait(1.0), 3) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.wait(0.5) == 0.25


def test_a_connection_made_restarts_the_backoff() -> None:
    """After a connection, the next loss waits the first delay again."""
    policy = Reconnect((0.1, 5.0), reconnect=True)
    policy.wait(1.0)
    policy.wait(1.0)
    policy.connected()
    assert policy.wait(1.0) == 0.1


@pytest.mark.parametrize(
    ("status", "can_renew", "reconnect", "step"),
    [
        (401, True, True, Step.RENEW),
        (401, False, True, Step.GIVE_UP),
        (403, True, True, Step.GIVE_UP),
        (404, True, True, Step.GIVE_UP),
        (400, True, True, Step.GIVE_UP),
        (429, True, True, Step.RETRY),
        (503, False, True, Step.RETRY),
        (503, False, False, Step.GIVE_UP),
    ],
)
def test_a_refused_handshake_leads_to_its_step(
    status: int, can_renew: bool, reconnect: bool, step: Step
) -> None:
    """401 renews the token if it can; 400, 403 and 404 won't change; others are retried."""
    assert Reconnect((0.1, 5.0), reconnect).refused(status, can_renew) is step


@pytest.mark.parametrize(
    ("code", "can_renew", "reconnect", "step"),
    [
        (4001, True, True, Step.RENEW_NOW),
        (4001, False, True, Step.RETRY),
        (1011, True, True, Step.RETRY),
        (None, True, True, Step.RETRY),
        (4001, True, False, Step.GIVE_UP),
    ],
)
def test_a_lost_connection_leads_to_its_step(
    code: int | None, can_renew: bool, reconnect: bool, step: Step
) -> None:
    """An expired token is renewed and the connection made again at once; else wait or give up."""
    assert Reconnect((0.1, 5.0), reconnect).lost(code, can_renew) is step


def test_an_unreachable_broker_is_retried_only_when_reconnecting() -> None:
    """Without ``reconnect`` the first failure is final."""
    assert Reconnect((0.1, 5.0), reconnect=True).unreachable() is Step.RETRY
    assert Reconnect((0.1, 5.0), reconnect=False).unreachable() is Step.GIVE_UP

"""The sans-I/O half of a /ws session, driven synchronously: `WsProtocol` and `Consumers`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from broker_core.errors import QueueFull, QueueNotFound
from broker_core.messages import Entry
from broker_core.queue import Published
from transports.wire import (
    Authenticated,
    Confirm,
    Deliver,
    Error,
    Subscribed,
    Unsubscribed,
    json_server_decoder,
)
from transports.ws.codec import JSON
from transports.ws.consumers import Consumers, WsConsumer
from transports.ws.protocol import State, WsProtocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from transports.wire import ServerFrame


class Owner:
    """A session stand-in that records what its consumers report."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.delivered: list[tuple[WsConsumer, list[Entry]]] = []
        self.ended: list[tuple[WsConsumer, str]] = []
        self.errors: list[BaseException] = []

    def deliver(self, consumer: WsConsumer, entries: list[Entry]) -> None:
        if self.fail:
            raise RuntimeError("injected")
        self.delivered.append((consumer, entries))

    def end_subscription(self, consumer: WsConsumer, reason: str) -> None:
        if self.fail:
            raise RuntimeError("injected")
        self.ended.append((consumer, reason))

    def internal_error(self, exc: BaseException) -> None:
        self.errors.append(exc)


class Leases:
    """What `Broker.leases` would answer: the leased entries of each queue."""

    def __init__(self) -> None:
        self.by_queue: dict[str, dict[int, Entry]] = {}

    def __call__(self, queue: str) -> Mapping[int, Entry]:
        try:
            return self.by_queue[queue]
        except KeyError:
            raise QueueNotFound(queue) from None


def leased(id: int, consumer: int | None = 7, attempt: int = 1, body: bytes = b'"x"') -> Entry:
    """An entry leased to ``consumer`` on its ``attempt``-th delivery."""
    return Entry(
        id, content=body, size=len(body), created_at=0.0, attempt=attempt, consumer=consumer
    )


def frames(protocol: WsProtocol) -> list[ServerFrame]:
    """Decode what the protocol has to send (draining it)."""
    return [json_server_decoder.decode(data) for data in protocol.data_to_send()]


def subscribed(protocol: WsProtocol, queue: str = "jobs", prefetch: int = 10) -> WsConsumer:
    """A live consumer whose ``subscribed`` left (its consumer id is 7)."""
    consumer = protocol.consumers.add(Owner(), queue, prefetch)
    consumer.consumer_id = 7
    protocol.subscribed(consumer, None)
    protocol.data_to_send()
    return consumer


@pytest.fixture
def leases() -> Leases:
    return Leases()


@pytest.fixture
def protocol(leases: Leases) -> WsProtocol:
    return WsProtocol(JSON, leases)


def assert_delivered(out: list[ServerFrame], tags: list[int], ids: list[int]) -> None:
    """``out`` is exactly deliveries with these tags and message ids."""
    assert all(isinstance(frame, Deliver) for frame in out), out
    got = [(frame.tag, frame.message_id) for frame in out if isinstance(frame, Deliver)]
    assert got == list(zip(tags, ids, strict=True))


# -- deliveries -------------------------------------------------------------------------


def test_deliveries_get_tags_numbered_across_the_connections_consumers(
    protocol: WsProtocol,
) -> None:
    """Tags count up per connection, not per subscription."""
    jobs = subscribed(protocol, "jobs")
    mail = subscribed(protocol, "mail")
    protocol.deliver(jobs, [leased(10), leased(11)])
    protocol.deliver(mail, [leased(20)])
    assert_delivered(frames(protocol), [1, 2, 3], [10, 11, 20])
    assert sorted(jobs.held) == [1, 2]
    assert sorted(mail.held) == [3]


def test_deliveries_before_subscribed_leave_after_it(protocol: WsProtocol) -> None:
    """A delivery that beats ``subscribed`` waits, so the client learns the subscription first."""
    consumer = protocol.consumers.add(Owner(), "jobs", 10)
    protocol.deliver(consumer, [leased(10)])
    assert protocol.data_to_send() == []
    protocol.subscribed(consumer, "s1")
    first, second = frames(protocol)
    assert isinstance(first, Subscribed) and first.ref == "s1"
    assert isinstance(second, Deliver) and second.message_id == 10


def test_deliveries_once_closing_are_dropped(protocol: WsProtocol) -> None:
    """Closing stops deliveries: nothing is sent or held (removing the consumer requeues them)."""
    consumer = subscribed(protocol)
    protocol.close(flush=True)
    assert protocol.deliver(consumer, [leased(10)]) is None
    assert protocol.data_to_send() == []
    assert consumer.held == {}


def test_an_undeliverable_body_is_returned_not_sent(protocol: WsProtocol) -> None:
    """A stored body with a lone surrogate is handed back to be failed; the next is delivered."""
    consumer = subscribed(protocol)
    bad = leased(10, body=b'"\\ud800"')
    assert protocol.deliver(consumer, [bad, leased(11)]) == [10]
    assert_delivered(frames(protocol), [1], [11])


def test_a_crowded_consumer_forgets_tags_of_deliveries_ended_elsewhere(
    protocol: WsProtocol, leases: Leases
) -> None:
    """Past 2 x prefetch + 64 held tags, those no longer leased to it are forgotten."""
    consumer = subscribed(protocol, prefetch=1)
    entries = [leased(id) for id in range(1, 70)]
    leases.by_queue["jobs"] = {entry.id: entry for entry in entries[-2:]}
    protocol.deliver(consumer, entries)
    assert sorted(consumer.held) == [68, 69]
    assert sorted(protocol.consumers.tags) == [68, 69]


def test_pruning_a_deleted_queue_keeps_the_tags(protocol: WsProtocol) -> None:
    """A queue deleted meanwhile has no leases to read: the tags stay until the consumer ends."""
    consumer = subscribed(protocol, prefetch=1)
    protocol.deliver(consumer, [leased(id) for id in range(1, 70)])
    assert len(consumer.held) == 69


# -- claims -----------------------------------------------------------------------------


def test_an_ack_claims_a_tag_once(protocol: WsProtocol) -> None:
    """A claimed tag (ack, nack) is forgotten: claimed again, it is bad."""
    consumer = subscribed(protocol)
    protocol.deliver(consumer, [leased(10)])
    groups, bad = protocol.consumers.claim([1], keep=False)
    assert groups == {consumer: {10: 1}} and bad == []
    assert protocol.consumers.claim([1], keep=False) == ({}, [1])


def test_a_touch_claims_a_tag_and_keeps_it(protocol: WsProtocol) -> None:
    """A touch leaves the tag good for the ack that follows."""
    consumer = subscribed(protocol)
    protocol.deliver(consumer, [leased(10)])
    protocol.consumers.claim([1], keep=True)
    assert protocol.consumers.claim([1], keep=False) == ({consumer: {10: 1}}, [])


def test_a_tag_of_a_requeued_delivery_is_refused(protocol: WsProtocol) -> None:
    """A delivery requeued and delivered again since: its old tag settles nothing."""
    consumer = subscribed(protocol)
    entry = leased(10)
    protocol.deliver(consumer, [entry])
    entry.attempt = 2
    assert protocol.consumers.claim([1], keep=True) == ({}, [1])
    assert protocol.consumers.tags == {}


def test_a_tag_of_a_delivery_now_leased_to_another_consumer_is_refused(
    protocol: WsProtocol,
) -> None:
    """The message went to another consumer on the same attempt count: the tag is bad."""
    consumer = subscribed(protocol)
    entry = leased(10)
    protocol.deliver(consumer, [entry])
    entry.consumer = 8
    assert protocol.consumers.claim([1], keep=False) == ({}, [1])


def test_unsubscribing_forgets_the_subscriptions_tags(protocol: WsProtocol) -> None:
    """Once removed, a subscription's tags are unknown."""
    consumer = subscribed(protocol)
    protocol.deliver(consumer, [leased(10)])
    assert protocol.consumers.remove(consumer.id) is consumer
    assert protocol.consumers.claim([1], keep=False) == ({}, [1])
    assert protocol.consumers.remove(consumer.id) is None


def test_unknown_tags_are_answered_with_the_first_twenty(protocol: WsProtocol) -> None:
    """The detail names 20 tags and counts the rest; the frame carries them all."""
    protocol.unknown_tags("r", list(range(1, 26)))
    [error] = frames(protocol)
    assert isinstance(error, Error) and error.code == "unknown_tag" and error.ref == "r"
    assert error.detail.endswith("19, 20 and 5 more on this connection")
    assert error.tags == list(range(1, 26))


# -- revocation -------------------------------------------------------------------------


def test_revoked_tags_are_refused_as_revoked_and_the_others_pass(protocol: WsProtocol) -> None:
    """An ack mixing revoked and live tags: one ``revoked`` error, the live tags go on."""
    jobs = subscribed(protocol, "jobs")
    mail = subscribed(protocol, "mail")
    protocol.deliver(jobs, [leased(10)])
    protocol.deliver(mail, [leased(20)])
    protocol.data_to_send()
    protocol.consumers.revoke(jobs)
    assert jobs.ended == "revoked" and not protocol.consumers.is_live(jobs)
    assert protocol.refuse_revoked([1, 2], "a", forget=True) == [2]
    [error] = frames(protocol)
    assert isinstance(error, Error) and error.code == "revoked" and error.tags == [1]
    assert "'jobs'" in error.detail
    assert protocol.refuse_revoked([1], "b", forget=True) == [1]  # answered once


def test_a_touch_of_a_revoked_tag_keeps_it_revoked(protocol: WsProtocol) -> None:
    """A touch is refused as revoked and the later ack is too."""
    consumer = subscribed(protocol)
    protocol.deliver(consumer, [leased(10)])
    protocol.consumers.revoke(consumer)
    assert protocol.refuse_revoked([1], None, forget=False) == []
    assert protocol.refuse_revoked([1], None, forget=True) == []
    assert len(frames(protocol)) == 3  # the delivery, then two revoked errors


def test_revoked_tags_are_remembered_up_to_a_limit_oldest_first_forgotten() -> None:
    """Past the limit, the oldest revoked tags are forgotten (then answered unknown_tag)."""
    consumers = Consumers(Leases(), revoked_limit=2)
    consumer = consumers.add(Owner(), "jobs", 10)
    consumer.held = {tag: (leased(tag), 1) for tag in (1, 2, 3)}
    consumers.revoke(consumer)
    assert list(consumers.revoked) == [2, 3]


def test_a_consumer_revoked_ends_with_unsubscribed_revoked(protocol: WsProtocol) -> None:
    """Once its consumer is removed, the client is told how many messages were requeued."""
    consumer = subscribed(protocol)
    protocol.consumers.revoke(consumer)
    protocol.revoked(consumer, 3)
    [frame] = frames(protocol)
    assert frame == Unsubscribed(subscription=consumer.id, requeued=3, reason="revoked")


# -- subscriptions ended by the server ----------------------------------------------------


def test_a_subscription_ended_by_the_server_says_why(protocol: WsProtocol) -> None:
    """Its queue deleted: ``unsubscribed`` with the reason, and its tags are forgotten."""
    consumer = subscribed(protocol)
    protocol.deliver(consumer, [leased(10)])
    protocol.data_to_send()
    protocol.end(consumer, "queue deleted")
    [frame] = frames(protocol)
    assert frame == Unsubscribed(subscription=consumer.id, requeued=0, reason="queue deleted")
    assert protocol.consumers.tags == {} and consumer.ended == "queue deleted"


def test_a_subscription_ended_before_subscribed_says_nothing(protocol: WsProtocol) -> None:
    """The client never learnt of it: its subscribe fails instead."""
    consumer = protocol.consumers.add(Owner(), "jobs", 10)
    protocol.end(consumer, "queue deleted")
    assert protocol.data_to_send() == []
    assert consumer.ended == "queue deleted"


def test_taking_all_consumers_forgets_them_and_their_tags(protocol: WsProtocol) -> None:
    """Closing hands every live consumer to the session to remove."""
    consumer = subscribed(protocol)
    protocol.deliver(consumer, [leased(10)])
    assert protocol.consumers.take_all() == [consumer]
    assert len(protocol.consumers) == 0 and protocol.consumers.tags == {}


# -- publishes --------------------------------------------------------------------------


def test_confirms_and_errors_leave_in_the_order_of_their_publishes(protocol: WsProtocol) -> None:
    """One outcome per ref: a confirm, or the error of the one that failed."""
    protocol.published(3)
    outcomes: list[Any] = [
        Published(1, 0.0, False),
        QueueFull("jobs", "max_length 5"),
        Published(2, 0.0, True),
    ]
    assert protocol.confirmed(["a", "b", "c"], outcomes) is None
    first, second, third = frames(protocol)
    assert first == Confirm(ref="a", message_id=1, duplicate=False)
    assert isinstance(second, Error) and second.ref == "b" and second.code == "queue_full"
    assert third == Confirm(ref="c", message_id=2, duplicate=True)
    assert protocol.inflight == 0 and protocol.peak_inflight == 3


def test_a_group_failed_by_an_unexpected_error_answers_nothing(protocol: WsProtocol) -> None:
    """The session logs each unexpected failure and closes with 1011; no frame is made."""
    protocol.published(2)
    crash = RuntimeError("disk on fire")
    assert protocol.confirmed([1, 2], crash) == [crash, crash]
    assert protocol.data_to_send() == []
    assert protocol.inflight == 0


def test_confirms_still_leave_while_closing(protocol: WsProtocol) -> None:
    """A client told its publish is committed won't send it again."""
    protocol.published(1)
    protocol.close(flush=True)
    protocol.confirmed([1], [Published(5, 0.0, False)])
    assert frames(protocol) == [Confirm(ref=1, message_id=5, duplicate=False)]


def test_nothing_is_answered_once_the_connection_is_lost(protocol: WsProtocol) -> None:
    """Outcomes after the end only count down what is in flight."""
    protocol.published(1)
    protocol.connection_lost()
    assert protocol.state is State.CLOSED
    protocol.confirmed([1], [Published(5, 0.0, False)])
    assert protocol.data_to_send() == []
    assert protocol.inflight == 0


def test_closing_without_flush_drops_unsent_frames(protocol: WsProtocol) -> None:
    """A revoked user's connection sends nothing more."""
    protocol.error(None, "x", "y")
    protocol.close(flush=False)
    assert protocol.state is State.CLOSING
    assert protocol.data_to_send() == []


def test_the_outbox_is_drained_by_swap_and_return(protocol: WsProtocol) -> None:
    """What was returned once is not returned again."""
    protocol.error(None, "x", "y")
    assert len(protocol.data_to_send()) == 1
    assert protocol.data_to_send() == []


def test_an_unexpected_exception_is_not_answered(protocol: WsProtocol) -> None:
    """`fail` answers client errors and leaves unexpected ones to the session."""
    assert protocol.fail("r", QueueNotFound("jobs"))
    assert not protocol.fail("r", ZeroDivisionError())
    [error] = frames(protocol)
    assert isinstance(error, Error) and error.code == "queue_not_found"


def test_a_renewed_token_is_answered_with_its_remaining_time(protocol: WsProtocol) -> None:
    """``expires_in`` counts from ``now``, and never below zero."""
    protocol.authenticated("alice", 1000.0, "r", now=400.0)
    protocol.authenticated("alice", 1000.0, None, now=2000.0)
    assert frames(protocol) == [
        Authenticated(username="alice", expires_in=600.0, ref="r"),
        Authenticated(username="alice", expires_in=0.0),
    ]


# -- the sink ---------------------------------------------------------------------------


def test_a_failing_delivery_is_reported_not_raised_into_the_actor() -> None:
    """The actor's turn goes on for the queue's other consumers."""
    owner = Owner(fail=True)
    consumer = WsConsumer(owner, 1, "jobs", 10)
    consumer("jobs", [leased(10)])
    consumer.queue_deleted()
    assert [str(exc) for exc in owner.errors] == ["injected", "injected"]


def test_the_sink_hands_deliveries_and_queue_deletion_to_its_owner() -> None:
    """Deliveries and the queue's end go to the session that owns the consumer."""
    owner = Owner()
    consumer = WsConsumer(owner, 1, "jobs", 10)
    entries = [leased(10)]
    consumer("jobs", entries)
    consumer.queue_deleted()
    assert owner.delivered == [(consumer, entries)]
    assert owner.ended == [(consumer, "queue deleted")]

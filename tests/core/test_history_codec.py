"""The stored form of a history: lines built from journal ops read back as the same events."""

from __future__ import annotations

from typing import Any

import pytest

from broker_core.history import decode, record
from broker_core.history_codec import delivered_fragment, origin_fragment, token
from broker_core.journal import AckOp, DeadLetter, DeliverOp, Drop, Fail, Insert, Requeue, Restore
from broker_core.messages import Entry

CREATED = 1796560292.7929177


def story(ops: list[Any], now: float) -> list[tuple[str, dict[str, Any] | None, float]]:
    recorded = record(ops, now, lambda consumer: delivered_fragment(consumer, "ws alice 1.2.3.4"))
    assert recorded is not None
    return [(e.event, e.detail, e.at) for e in decode("".join(recorded.lines), CREATED)]


def test_the_typical_story_takes_a_few_bytes_and_reads_back_to_the_millisecond() -> None:
    entry = Entry(7, content=b"x", size=1, created_at=CREATED)
    ops = [
        Insert("jobs", entry, origin_fragment("rest", "admin")),
        DeliverOp(7, 1, CREATED + 30, None, CREATED),
        AckOp("jobs", 7, CREATED + 0.0684, False, CREATED),
    ]
    recorded = record(ops, CREATED + 0.0021)
    assert recorded is not None
    assert "".join(recorded.lines) == "2prest admin\n2d1\n68a\n"
    events = decode("".join(recorded.lines), CREATED)
    assert [(e.event, e.detail) for e in events] == [
        ("published", {"transport": "rest", "user": "admin"}),
        ("delivered", {"attempt": 1, "transport": "pull"}),
        ("acked", None),
    ]
    assert abs(events[2].at - (CREATED + 0.0684)) < 0.0005


@pytest.mark.parametrize(
    "reason", ["boom", "two words", "-", "", 'a "quote"', "back\\slash", "new\nline", "x\u2028y"]
)
def test_any_reason_reads_back_as_it_was(reason: str) -> None:
    ops = [
        Requeue(1, 2, "jobs", CREATED + 5, "nack", reason, CREATED),
        Fail("jobs", 1, reason, CREATED + 1, False, CREATED),
        DeadLetter(1, "jobs", "dead letters", reason, False, CREATED),
    ]
    events = story(ops, CREATED + 1)
    assert events[0][:2] == ("nacked", {"requeue": True, "reason": reason, "delay_ms": 4000})
    assert events[1][:2] == ("failed", {"reason": reason})
    assert events[2][:2] == (
        "dead_lettered",
        {"from": "jobs", "to": "dead letters", "reason": reason},
    )


def test_every_event_of_the_ops_and_their_details() -> None:
    entry = Entry(1, content=b"x", size=1, created_at=CREATED, deliver_at=CREATED + 60)
    ops = [
        Insert("jobs", entry, origin_fragment("ws", "token:abc", "orders")),
        DeliverOp(1, 1, CREATED + 90, 12, CREATED),
        Requeue(1, 1, "jobs", 0.0, "gone", None, CREATED),
        DeliverOp(1, 2, CREATED + 90, None, CREATED),
        Requeue(1, 2, "jobs", 0.0, "lease", None, CREATED),
        Requeue(1, 2, "jobs", 0.0, "nack", None, CREATED),
        Restore(1, "jobs", "ops"),
        Drop(1, "cancelled", "admin", CREATED),
        Drop(1, "expired", None, CREATED),
        Drop(1, "dropped", None, 0.0),
        Drop(1, "maxlen", None, 0.0),
    ]
    events = story(ops, CREATED + 1)
    assert [(name, detail) for name, detail, _ in events] == [
        ("published", {"transport": "ws", "user": "token:abc", "topic": "orders"}),
        ("delayed", {"until": CREATED + 60}),
        ("delivered", {"attempt": 1, "consumer": 12, "transport": "ws", "user": "alice"}),
        ("lease_expired", {"attempt": 1, "reason": "consumer gone"}),
        ("delivered", {"attempt": 2, "transport": "pull"}),
        ("lease_expired", {"attempt": 2, "reason": "lease expired"}),
        ("nacked", {"requeue": True, "reason": None}),
        ("retried", {"to": "jobs", "by": "ops"}),
        ("cancelled", {"reason": "cancelled", "by": "admin"}),
        ("expired", {"reason": "expired"}),
        ("dropped", {"reason": "dropped"}),
        ("dropped", {"reason": "maxlen"}),
    ]
    # Without the message's created_at (a Restore, a cold item): epoch milliseconds.
    assert [round(at, 3) for _, _, at in events] == [round(CREATED + 1, 3)] * len(events)


def test_a_scheduled_publish_names_its_schedule() -> None:
    entry = Entry(1, content=b"x", size=1, created_at=CREATED)
    ops = [Insert("jobs", entry, origin_fragment("schedule", None, None, "nightly"))]
    assert story(ops, CREATED)[0][:2] == (
        "published",
        {"transport": "schedule", "schedule": "nightly"},
    )


def test_a_webhook_delivery_names_the_webhook() -> None:
    fields = delivered_fragment(4, "webhook wh_1 https://example.com/hook")
    [event] = decode(f"5d1{fields}\n", CREATED)
    assert event.detail == {"attempt": 1, "consumer": 4, "transport": "webhook", "webhook": "wh_1"}


def test_the_first_form_and_new_lines_after_it_read_in_order() -> None:
    old = (
        '[1796560292.7929177,"published"]\n'
        '[1796560292.859065,"delivered",{"attempt":1,"consumer":3,"transport":"ws","user":"al"}]\n'
        '[1796560292.861425,"nacked",{"requeue":true,"reason":"x","delay_ms":5}]\n'
    )
    events = decode(old + "100a\n", CREATED)
    assert [(e.event, e.detail) for e in events] == [
        ("published", None),
        ("delivered", {"attempt": 1, "consumer": 3, "transport": "ws", "user": "al"}),
        ("nacked", {"requeue": True, "reason": "x", "delay_ms": 5}),
        ("acked", None),
    ]
    assert [e.at for e in events] == [
        1796560292.7929177,
        1796560292.859065,
        1796560292.861425,
        CREATED + 0.1,
    ]


def test_a_token_is_bare_only_when_it_reads_back_bare() -> None:
    assert token("admin") == "admin"
    assert token("token:ab-12") == "token:ab-12"
    assert token(None) == "-"
    assert token("-") == '"-"'
    assert token("") == '""'
    assert token("a b") == '"a b"'


def test_lines_that_committed_late_are_read_in_time_order() -> None:
    """PostgreSQL: a node's delivery line may land after another node's ack line."""
    events = decode("0prest admin\n90a\n41d1\n", CREATED)
    assert [e.event for e in events] == ["published", "delivered", "acked"]
    # Lines of one millisecond keep their stored order.
    assert [e.event for e in decode("0prest admin\n41a\n41d1\n", CREATED)] == [
        "published",
        "acked",
        "delivered",
    ]

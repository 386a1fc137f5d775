"""Timetables of recurring schedules: next fire, the due instant, catch-up, DST, validation."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from broker_core.errors import InvalidSchedule
from broker_core.schedules import (
    CreateScheduleRequest,
    Schedule,
    Timetable,
    due,
    instant_text,
    new_schedule,
    next_fire,
    next_wake,
)

NEW_YORK = ZoneInfo("America/New_York")


def ts(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    tz: ZoneInfo | None = None,
) -> float:
    """A Unix timestamp of a wall-clock time (UTC unless ``tz``)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=tz or UTC).timestamp()


def request(**fields: object) -> CreateScheduleRequest:
    """A create request from JSON fields (as a transport decodes it)."""
    body = {"name": "s", "content": {"n": 1}, **fields}
    return msgspec.json.decode(msgspec.json.encode(body), type=CreateScheduleRequest)


def cron(expression: str, created: float, tz: str = "UTC", **fields: object) -> Schedule:
    return new_schedule("q", request(cron=expression, timezone=tz, **fields), created)


def every(ms: int, created: float, **fields: object) -> Schedule:
    return new_schedule("q", request(every_ms=ms, **fields), created)


def fires(schedule: Schedule, start: float, end: float) -> list[float]:
    """Every instant it fires for in ``(start, end]``, walking `next_fire`."""
    out = []
    t = start
    while (at := next_fire(schedule, t)) is not None and at <= end:
        out.append(at)
        t = at
    return out


def test_every_fires_one_period_after_creation_then_each_period() -> None:
    """An ``every_ms`` schedule without start_at first fires one period after it was created."""
    s = every(1500, 100.0)
    assert next_fire(s, 100.0) == 101.5
    assert fires(s, 100.0, 105.0) == [101.5, 103.0, 104.5]
    assert due(s, 101.4) is None
    assert due(s, 101.5) == 101.5


def test_due_after_downtime_is_the_latest_missed_instant_only() -> None:
    """Many missed instants are one catch-up, the latest of them; then nothing until the next."""
    s = msgspec.structs.replace(every(1000, 0.0), last_fired=3.0)
    assert due(s, 10.5) == 10.0
    caught_up = msgspec.structs.replace(s, last_fired=10.0)
    assert due(caught_up, 10.9) is None
    assert next_wake(caught_up, 10.9) == 11.0


def test_a_fired_instant_is_never_due_again() -> None:
    """The floor is the last fire: the same instant never comes back."""
    s = msgspec.structs.replace(
        cron("*/5 * * * *", ts(2026, 1, 1)), last_fired=ts(2026, 1, 1, 0, 5)
    )
    assert due(s, ts(2026, 1, 1, 0, 9, 59)) is None
    assert due(s, ts(2026, 1, 1, 0, 10)) == ts(2026, 1, 1, 0, 10)


def test_handled_instants_are_not_due_on_this_node() -> None:
    """An instant another node won (``handled``) is not due here; the next one is."""
    s = every(1000, 0.0)
    assert due(s, 5.2, handled=5.0) is None
    assert due(s, 6.0, handled=5.0) == 6.0


def test_paused_is_never_due_and_a_resume_does_not_catch_up() -> None:
    """Paused: nothing due, no wake; resumed: instants before the resume stay missed."""
    s = msgspec.structs.replace(every(1000, 0.0), paused=True)
    assert due(s, 10.0) is None
    assert next_wake(s, 10.0) is None
    resumed = msgspec.structs.replace(s, paused=False, resumed_at=10.2)
    assert due(resumed, 10.9) is None
    assert due(resumed, 11.0) == 11.0


def test_start_at_anchors_every_and_bounds_cron() -> None:
    """``start_at`` is the first instant of ``every_ms``; cron instants before it are skipped."""
    s = every(60_000, ts(2026, 1, 1), start_at="2026-01-01T00:10:00Z")
    assert next_fire(s, ts(2026, 1, 1)) == ts(2026, 1, 1, 0, 10)
    assert due(s, ts(2026, 1, 1, 0, 9)) is None
    c = cron("* * * * *", ts(2026, 1, 1), start_at="2026-01-01T00:10:00Z")
    assert due(c, ts(2026, 1, 1, 0, 9, 30)) is None
    assert next_fire(c, ts(2026, 1, 1)) == ts(2026, 1, 1, 0, 10)


def test_end_at_is_the_last_instant() -> None:
    """No instant after ``end_at``; downtime past it still catches up the last one before it."""
    s = cron("0 * * * *", ts(2026, 1, 1), end_at="2026-01-01T03:00:00Z")
    assert fires(s, ts(2026, 1, 1), ts(2026, 1, 2)) == [ts(2026, 1, 1, h) for h in (1, 2, 3)]
    assert next_fire(s, ts(2026, 1, 1, 3)) is None
    assert due(s, ts(2026, 1, 5)) == ts(2026, 1, 1, 3)
    assert (
        next_wake(msgspec.structs.replace(s, last_fired=ts(2026, 1, 1, 3)), ts(2026, 1, 5)) is None
    )


def test_cron_reads_its_time_zone() -> None:
    """``0 9 * * *`` in New York is 14:00 UTC in winter and 13:00 UTC in summer."""
    s = cron("0 9 * * *", ts(2026, 1, 1), tz="America/New_York")
    assert next_fire(s, ts(2026, 1, 1)) == ts(2026, 1, 1, 14)
    assert next_fire(s, ts(2026, 7, 1)) == ts(2026, 7, 1, 13)


def test_dst_spring_forward_runs_a_skipped_time_at_the_jump() -> None:
    """02:30 does not exist on 2026-03-08 in New York: it fires at 03:00 EDT, once (Debian cron)."""
    s = cron("30 2 * * *", ts(2026, 3, 7), tz="America/New_York")
    got = fires(s, ts(2026, 3, 7, 12), ts(2026, 3, 10))
    assert got == [
        ts(2026, 3, 8, 3, 0, tz=NEW_YORK),  # 07:00 UTC, the jump
        ts(2026, 3, 9, 2, 30, tz=NEW_YORK),
    ]
    assert got[0] == ts(2026, 3, 8, 7)


def test_dst_fall_back_runs_a_fixed_time_once_and_frequent_jobs_in_both_hours() -> None:
    """01:30 happens twice on 2026-11-01 in New York: a daily job fires once, a half-hourly one
    in both hours, and no instant is ever repeated."""
    daily = cron("30 1 * * *", ts(2026, 10, 31), tz="America/New_York")
    got = fires(daily, ts(2026, 10, 31, 12), ts(2026, 11, 3))
    assert got == [ts(2026, 11, 1, 5, 30), ts(2026, 11, 2, 6, 30)]
    frequent = cron("*/30 1 * * *", ts(2026, 10, 31), tz="America/New_York")
    hour = fires(frequent, ts(2026, 11, 1, 4), ts(2026, 11, 1, 7))
    assert hour == [
        ts(2026, 11, 1, 5),
        ts(2026, 11, 1, 5, 30),
        ts(2026, 11, 1, 6),
        ts(2026, 11, 1, 6, 30),
    ]


def test_due_agrees_with_next_fire_across_dst() -> None:
    """The instant due at any time is the last one `next_fire` reaches (reverse = forward)."""
    s = cron("*/20 0-3 * * *", ts(2026, 3, 7), tz="America/New_York")
    forward = fires(s, ts(2026, 3, 7), ts(2026, 3, 9))
    for instant in forward:
        assert due(s, instant + 59) == instant
        assert due(s, instant) == instant


@settings(max_examples=200, deadline=None)
@given(
    every_ms=st.integers(1000, 10_000_000),
    created=st.floats(0, 2e9),
    now=st.floats(0, 2e9),
    last=st.none() | st.floats(0, 2e9),
)
def test_every_due_matches_a_model(
    every_ms: int, created: float, now: float, last: float | None
) -> None:
    """``due`` is the largest ``anchor + k * every`` in ``(floor, now]`` (the model)."""
    s = msgspec.structs.replace(every(every_ms, created), last_fired=last)
    created_ms = math.floor(created * 1000)  # a schedule is created at a whole millisecond
    assert s.created_at == created_ms / 1000
    k = (math.floor(now * 1000) - created_ms) // every_ms
    model = (created_ms + k * every_ms) / 1000 if k >= 0 else None
    floor = max(s.created_at, last if last is not None else s.created_at)
    expected = model if model is not None and model > floor else None
    assert due(s, now) == expected


@settings(max_examples=100, deadline=None)
@given(
    t=st.floats(1.6e9, 1.9e9),
    expression=st.sampled_from(["*/7 * * * *", "0 2 * * *", "15 1-3 * * 0"]),
)
def test_cron_forward_and_back_agree(t: float, expression: str) -> None:
    """``at_or_before(after(t))`` is ``after(t)``, and ``after`` of an instant is later."""
    table = Timetable(cron(expression, 0.0, tz="Europe/Riga"))
    nxt = table.after(t)
    assert nxt is not None and nxt > t
    assert table.at_or_before(nxt) == nxt
    prev = table.at_or_before(t)
    assert prev is not None and prev <= t
    assert table.after(prev) == nxt


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "* * * * *", "every_ms": 1000}, "cron"),
        ({}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": "@daily"}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "* * * * *", "timezone": "../../etc/passwd"}, "timezone"),
        (
            {
                "every_ms": 1000,
                "start_at": "2026-01-02T00:00:00Z",
                "end_at": "2026-01-01T00:00:00Z",
            },
            "end_at",
        ),
        ({"every_ms": 1000, "start_at": "2026-01-02T00:00:00"}, "start_at"),
    ],
)
def test_invalid_definitions_name_their_field(fields: dict[str, object], field: str) -> None:
    """Each bad definition raises `InvalidSchedule` naming the field at fault."""
    with pytest.raises(InvalidSchedule) as caught:
        new_schedule("q", request(**fields), 0.0)
    assert caught.value.field == field


def test_every_ms_below_the_minimum_is_refused_by_the_type() -> None:
    """``every_ms`` under 1000 fails decoding, naming the field."""
    with pytest.raises(msgspec.ValidationError, match=r"every_ms"):
        request(every_ms=999)


def test_message_headers_carry_the_schedule_and_the_instant() -> None:
    """Fired messages keep the schedule's headers and add ``x-schedule`` and ``x-scheduled-for``."""
    s = every(1000, 0.0, headers={"kind": "tick", "x-schedule": "forged"})
    assert s.message_headers(ts(2026, 1, 1, 9)) == {
        "kind": "tick",
        "x-schedule": "s",
        "x-scheduled-for": "2026-01-01T09:00:00Z",
    }
    assert instant_text(1.25) == "1970-01-01T00:00:01.250Z"


def test_view_shows_next_fire_and_last_fire() -> None:
    """The wire view has the next instant and the last one fired."""
    s = msgspec.structs.replace(cron("0 * * * *", ts(2026, 1, 1)), last_fired=ts(2026, 1, 1, 1))
    view = s.view(ts(2026, 1, 1, 1, 30))
    assert view.next_fire_at == datetime(2026, 1, 1, 2, tzinfo=UTC)
    assert view.last_fired_at == datetime(2026, 1, 1, 1, tzinfo=UTC)
    assert s.expression == "0 * * * *"
    assert every(5000, 0.0).expression == "every 5000 ms"


@pytest.mark.parametrize(
    "fields",
    [
        {"cron": "* * * * *", "start_at": "9999-12-31T23:59:00Z"},
        {"cron": "* * * * *", "end_at": "0001-01-01T00:00:00Z"},
        {"every_ms": 1000, "start_at": "9999-12-31T23:59:59Z"},
        {"every_ms": 1000, "start_at": "0001-01-01T00:00:00Z"},
    ],
)
def test_instants_at_the_ends_of_time_are_answered(fields: dict[str, object]) -> None:
    """Bounds at the years 1 and 9999 give a view, a due answer and a wake, never an error."""
    s = new_schedule("q", request(**fields), ts(2026, 1, 1))
    s.view(ts(2026, 1, 1))
    assert due(s, ts(2026, 1, 1, 0, 5)) in (None, ts(2026, 1, 1, 0, 5))
    next_wake(s, ts(2026, 1, 1))
    assert Timetable(s).after(253402300799.0) is None or "every_ms" in fields

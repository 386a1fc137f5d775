"""Recurring schedules: their wire shapes, their timetables and which instant is due.

A schedule publishes one message to its queue at each instant of its
timetable: every ``every_ms`` milliseconds from ``start_at`` (or from its
creation), or at each match of a five-field ``cron`` expression in an IANA
time zone. Cron is evaluated by `cronsim` (Debian cron's semantics, DST
transitions included: a time skipped by a spring-forward runs at the jump,
a repeated hour runs once for a job at a fixed time; see the README).

Everything here is pure: time is an argument, nothing is stored. The
`scheduler.Scheduler` keeps schedules in memory, asks `due` what to fire
and `next_wake` when to wake, and storage keeps them (`ScheduleStore`).

**Never twice, one catch-up.** An instant is due only if it is later than
the schedule's *floor*: the last instant fired (recorded in the same
transaction as its message), its creation and its last resume. `due`
answers only the latest due instant: after downtime the instants missed
are one message, for the latest of them, not a burst.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cronsim import CronSim, CronSimError

from .errors import InvalidSchedule
from .messages import NAME_PATTERN, Headers, Millis, Priority, from_timestamp

__all__ = [
    "HEADER_INSTANT",
    "HEADER_SCHEDULE",
    "MAX_EVERY_MS",
    "MIN_EVERY_MS",
    "CreateScheduleRequest",
    "Schedule",
    "ScheduleStore",
    "ScheduleView",
    "Timetable",
    "UpdateScheduleRequest",
    "due",
    "instant_text",
    "new_schedule",
    "next_fire",
    "next_wake",
]

MIN_EVERY_MS = 1000
"""The shortest ``every_ms``: a schedule is no load generator (a broker round trip per fire)."""
MAX_EVERY_MS = 366 * 24 * 3600 * 1000
"""The longest ``every_ms``: a year (a longer period reads better as ``cron``)."""
HEADER_SCHEDULE = "x-schedule"
"""The header naming the schedule that published a message."""
HEADER_INSTANT = "x-scheduled-for"
"""The header holding the instant a message was published for (ISO 8601, UTC)."""

_PARSE_AT = datetime(2000, 1, 1, tzinfo=UTC)
"""Any instant: cronsim parses an expression when given a start."""

ScheduleName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, max_length=200)]
EveryMillis = Annotated[int, msgspec.Meta(ge=MIN_EVERY_MS, le=MAX_EVERY_MS)]
CronText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ZoneText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CreateScheduleRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /queues/{name}/schedules``: exactly one of ``cron`` and ``every_ms``.

    ``content``, ``headers``, ``priority`` and ``ttl_ms`` are those of each
    message published; ``start_at`` and ``end_at`` bound the instants
    (inclusive); ``timezone`` is the IANA zone ``cron`` is read in.
    """

    name: ScheduleName
    cron: CronText | None = None
    every_ms: EveryMillis | None = None
    timezone: ZoneText = "UTC"
    content: msgspec.Raw
    headers: Headers | None = None
    priority: Priority = 0
    ttl_ms: Millis | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    paused: bool = False


class UpdateScheduleRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``PATCH /queues/{name}/schedules/{schedule}``."""

    paused: bool


class Schedule(msgspec.Struct, kw_only=True, frozen=True):
    """A schedule as the broker keeps it; instants are Unix seconds.

    ``last_fired`` is the last instant a message was committed for;
    ``resumed_at`` the last time it was resumed (instants while paused are
    not caught up). Storage keeps the definition as one encoded blob, so
    new fields need defaults.
    """

    queue: str
    name: str
    cron: str | None = None
    every_ms: int | None = None
    timezone: str = "UTC"
    content: bytes
    headers: dict[str, str] | None = None
    priority: int = 0
    ttl_ms: int | None = None
    start_at: float | None = None
    end_at: float | None = None
    created_at: float
    paused: bool = False
    resumed_at: float = 0.0
    last_fired: float | None = None

    @property
    def expression(self) -> str:
        """What it runs on, for people: the cron expression or ``every N ms``."""
        return self.cron if self.cron is not None else f"every {self.every_ms} ms"

    def floor(self) -> float:
        """Instants at or before this are never due (fired, before creation, or while paused)."""
        return max(self.created_at, self.resumed_at, self.last_fired or -math.inf)

    def message_headers(self, instant: float) -> dict[str, str]:
        """The headers of the message fired for ``instant``: the schedule's, then its own two."""
        return {
            **(self.headers or {}),
            HEADER_SCHEDULE: self.name,
            HEADER_INSTANT: instant_text(instant),
        }

    def view(self, now: float) -> ScheduleView:
        """The wire view, with the next instant it will fire for (``None``: none left)."""
        upcoming = next_fire(self, now)
        return ScheduleView(
            queue=self.queue,
            name=self.name,
            cron=self.cron,
            every_ms=self.every_ms,
            timezone=self.timezone,
            content=msgspec.Raw(self.content),
            headers=self.headers,
            priority=self.priority,
            ttl_ms=self.ttl_ms,
            start_at=None if self.start_at is None else from_timestamp(self.start_at),
            end_at=None if self.end_at is None else from_timestamp(self.end_at),
            paused=self.paused,
            created_at=from_timestamp(self.created_at),
            last_fired_at=None if self.last_fired is None else from_timestamp(self.last_fired),
            next_fire_at=None if upcoming is None else from_timestamp(upcoming),
        )


class ScheduleView(msgspec.Struct, kw_only=True, frozen=True):
    """A schedule as ``GET /queues/{name}/schedules`` shows it."""

    queue: str
    name: str
    cron: str | None = None
    every_ms: int | None = None
    timezone: str
    content: msgspec.Raw
    headers: dict[str, str] | None = None
    priority: int = 0
    ttl_ms: int | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    paused: bool = False
    created_at: datetime
    last_fired_at: datetime | None = None
    next_fire_at: datetime | None = None


def instant_text(instant: float) -> str:
    """``instant`` as ISO 8601 UTC with a ``Z`` (milliseconds only when it has some)."""
    moment = datetime.fromtimestamp(instant, UTC)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule("timezone", f"unknown IANA time zone {name[:64]!r}") from None


def _timestamp(moment: datetime | None, field: str) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise InvalidSchedule(field, "give a time zone (e.g. 'Z' or '+02:00')")
    return moment.timestamp()


def new_schedule(queue: str, request: CreateScheduleRequest, now: float) -> Schedule:
    """Check a create request and turn it into a `Schedule` created at ``now``.

    Raises:
        InvalidSchedule: naming the field: both or neither of ``cron`` and
            ``every_ms``, a cron expression that isn't five valid fields or
            never matches, an unknown time zone, a naive or inverted range.
    """
    if (request.cron is None) == (request.every_ms is None):
        raise InvalidSchedule("cron", "give exactly one of 'cron' and 'every_ms'")
    _zone(request.timezone)
    start_at = _timestamp(request.start_at, "start_at")
    end_at = _timestamp(request.end_at, "end_at")
    if start_at is not None and end_at is not None and end_at < start_at:
        raise InvalidSchedule("end_at", "end_at is before start_at")
    cron = None
    if request.cron is not None:
        cron = " ".join(request.cron.split())
        fields = len(cron.split(" "))
        if fields != 5:
            raise InvalidSchedule(
                "cron", f"five fields (minute hour day month weekday), not {fields}"
            )
    schedule = Schedule(
        queue=queue,
        name=request.name,
        cron=cron,
        every_ms=request.every_ms,
        timezone=request.timezone,
        content=bytes(request.content),
        headers=request.headers,
        priority=request.priority,
        ttl_ms=request.ttl_ms,
        start_at=start_at,
        end_at=end_at,
        # Whole milliseconds: the first ``every_ms`` instant is exactly one period after it.
        created_at=math.floor(now * 1000) / 1000,
        paused=request.paused,
    )
    timetable = Timetable(schedule)  # parses the cron expression
    if cron is not None and timetable.after(now) is None and timetable.at_or_before(now) is None:
        raise InvalidSchedule("cron", "the expression never matches")
    return schedule


class Timetable:
    """The instants of one schedule, ignoring its floor and range.

    Args:
        schedule: its ``cron`` (with ``timezone``) or ``every_ms`` (anchored
            at ``start_at``, else at ``created_at``).

    Raises:
        InvalidSchedule: the cron expression or the time zone is invalid.
    """

    def __init__(self, schedule: Schedule) -> None:
        self._zone = _zone(schedule.timezone)
        self._cron = schedule.cron
        if self._cron is not None:
            try:
                CronSim(self._cron, _PARSE_AT)
            except CronSimError as exc:
                raise InvalidSchedule("cron", f"invalid cron expression: {exc}") from None
        anchor = schedule.start_at if schedule.start_at is not None else schedule.created_at
        # Whole milliseconds, in integers: an instant computed twice is the same float.
        # Rounded up (less a microsecond of float error): never an instant before the anchor.
        self._anchor_ms = math.ceil(anchor * 1000 - 0.001)
        self._every_ms = schedule.every_ms or 0

    def after(self, t: float) -> float | None:
        """The first instant strictly after ``t`` (``None``: none within cronsim's 50 years)."""
        if self._cron is None:
            k = (math.floor(t * 1000) - self._anchor_ms) // self._every_ms + 1
            return (self._anchor_ms + max(k, 0) * self._every_ms) / 1000
        try:
            moment = next(CronSim(self._cron, datetime.fromtimestamp(t, self._zone)))
        except (StopIteration, OverflowError, ValueError, OSError):
            return None  # none left, or past the year 9999
        return moment.timestamp()

    def at_or_before(self, t: float) -> float | None:
        """The last instant at or before ``t`` (``None``: none)."""
        if self._cron is None:
            k = (math.floor(t * 1000) - self._anchor_ms) // self._every_ms
            return None if k < 0 else (self._anchor_ms + k * self._every_ms) / 1000
        try:
            # cronsim's reverse iteration starts strictly before its start.
            start = datetime.fromtimestamp(t, self._zone) + timedelta(microseconds=1)
            moment = next(CronSim(self._cron, start, reverse=True))
        except (StopIteration, OverflowError, ValueError, OSError):
            return None  # none left, or before the year 1
        return moment.timestamp()


def due(schedule: Schedule, now: float, handled: float = -math.inf) -> float | None:
    """The instant to fire for at ``now``, or ``None``.

    The latest instant at or before ``now`` (and within ``start_at`` and
    ``end_at``) that is later than the schedule's floor and than
    ``handled`` (what this node settled otherwise: lost to another node,
    refused). One instant however many were missed: a catch-up, not a burst.
    """
    if schedule.paused:
        return None
    floor = max(schedule.floor(), handled)
    until = now if schedule.end_at is None else min(now, schedule.end_at)
    instant = Timetable(schedule).at_or_before(until)
    if instant is None or instant <= floor:
        return None
    if schedule.start_at is not None and instant < schedule.start_at:
        return None
    return instant


def next_fire(schedule: Schedule, now: float, handled: float = -math.inf) -> float | None:
    """The next instant after ``now`` (and after the floor) it will fire for, or ``None``.

    Paused schedules answer it too (it is what a resume now would lead to).
    """
    after = max(schedule.created_at, schedule.last_fired or -math.inf, handled, now)
    if schedule.start_at is not None:
        after = max(after, schedule.start_at - 0.001)  # start_at itself may be one
    instant = Timetable(schedule).after(after)
    if instant is None or (schedule.end_at is not None and instant > schedule.end_at):
        return None
    return instant


def next_wake(schedule: Schedule, now: float, handled: float = -math.inf) -> float | None:
    """When the scheduler must look at ``schedule`` again: ``now`` if it is due, else its
    next instant, ``None`` when paused or finished."""
    if schedule.paused:
        return None
    if due(schedule, now, handled) is not None:
        return now
    return next_fire(schedule, now, handled)


class ScheduleStore(Protocol):
    """Where schedules are kept: each backend's, reached as ``storage.schedules``.

    Fires are recorded by the journal (`journal.FireSchedule`, in the
    batch of the message); everything else is written here directly, after
    the journal operations buffered before.
    """

    async def load(self, queue: str | None = None) -> list[Schedule]:
        """Every schedule (of ``queue``), by queue and name."""
        ...

    async def get(self, queue: str, name: str) -> Schedule | None:
        """One schedule, or ``None``."""
        ...

    async def insert(self, schedule: Schedule) -> bool:
        """Store a new schedule; ``False`` if one of that name exists on its queue.

        Raises:
            QueueNotFound: the queue is gone.
        """
        ...

    async def set_paused(self, queue: str, name: str, paused: bool, now: float) -> Schedule | None:
        """Pause or resume (a resume records ``resumed_at = now``); ``None`` if there is none."""
        ...

    async def delete(self, queue: str, name: str) -> bool:
        """Delete a schedule; return whether it existed."""
        ...

    async def claim(self, queue: str, name: str, instant: float) -> bool:
        """Take the right to fire ``instant``: whether this node may publish it now.

        ``False`` when the schedule is gone or paused, ``instant`` is not later
        than its last fire, or another live node holds it (several nodes:
        the claim is a compare-and-set; a dead holder's claim may be taken over).
        """
        ...

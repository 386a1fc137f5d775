"""The life story of every message: history lines built from journal operations.

Each operation a queue's state journals (publish, delivery, settlement,
dead-lettering, ...) says what happened to a message; `record` turns a
batch of them into one `History` operation, written right behind them into
the same write-behind buffer, so it joins the same group commit. Storage
appends each line to its message's ``history`` column, in the row's own
insert or patch of that batch (no statement of its own), and deletes it
with the message. The lines are built as the bytes stored, straight from
the operations (`history_codec` says their form, and decodes them).

`SetResult` is the result an ack carried, kept with the message.
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from .history_codec import decode_lines, origin_fragment, token

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "CALLER",
    "HISTORY_EVENTS",
    "Caller",
    "History",
    "HistoryEntry",
    "SetResult",
    "acting",
    "actor",
    "decode",
    "publisher",
    "record",
    "scheduled",
]

HISTORY_EVENTS = (
    "published",
    "delayed",
    "delivered",
    "acked",
    "nacked",
    "lease_expired",
    "failed",
    "dead_lettered",
    "retried",
    "expired",
    "dropped",
    "cancelled",
    "result",
)
"""Every event name a history may hold."""


class Caller(NamedTuple):
    """Who acts in a context: ``user`` (or service token), and the fields of a
    ``published`` line (``origin``: transport and user, `history_codec.origin_fragment`)."""

    user: str | None
    origin: str


CALLER: ContextVar[Caller | None] = ContextVar("caller", default=None)
"""Who acts in this context: set by a transport once it knows its caller (`acting`),
read where a publish, a retry or a cancel enters the broker (`publisher`, `actor`)."""


@lru_cache(maxsize=4096)
def _caller(transport: str, user: str | None) -> Caller:
    return Caller(user, origin_fragment(transport, user))


def acting(transport: str, user: str | None) -> None:
    """Say that ``user`` acts over ``transport`` (``rest``, ``ws``, ``graphql``...) here."""
    CALLER.set(_caller(transport, user))


def scheduled(schedule: str) -> None:
    """Say that schedule ``schedule`` publishes in this context (the scheduler's task)."""
    CALLER.set(Caller(None, origin_fragment("schedule", None, None, schedule)))


def publisher(topic: str | None = None) -> str:
    """The fields of the ``published`` lines of what is published in this context now."""
    caller = CALLER.get()
    if caller is None:
        return "" if topic is None else f"- - {token(topic)}"
    if topic is None:
        return caller.origin
    return f"{caller.origin} {token(topic)}"


def actor() -> str | None:
    """Who acts in this context (a retry's, a cancel's ``by``), if a transport said."""
    caller = CALLER.get()
    return None if caller is None else caller.user


class History(msgspec.Struct, frozen=True, gc=False):
    """History lines to append: ``lines[i]`` to message ``ids[i]``'s history, in order."""

    ids: list[int]
    lines: list[str]
    pulled: bool = False
    """Whether a line says a message was pulled (no push consumer): on shared storage it
    commits at once, so that an ack or nack of the message sent to another node's REST
    API comes after it. A push consumer settles over its own connection, on this node."""


class SetResult(msgspec.Struct, frozen=True, gc=False):
    """The JSON result an ack of message ``id`` carried."""

    id: int
    result: bytes


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event as shown: its time, name and details."""

    at: float
    event: str
    detail: dict[str, Any] | None = None


def decode(history: str | None, created_at: float = 0.0) -> list[HistoryEntry]:
    """The events of a stored ``history`` column of a message created at ``created_at``.

    In time order: on PostgreSQL each node appends the lines of its own
    events, and a node's lines may commit after another node's later ones
    (a delivery's line lingers with the acks while the message is settled
    elsewhere). Lines of one millisecond keep their stored order.
    """
    if not history:
        return []
    entries = [
        HistoryEntry(at=at, event=event, detail=detail)
        for at, event, detail in decode_lines(history, created_at)
    ]
    # By the millisecond, as stored: lines of one millisecond keep their order.
    entries.sort(key=lambda entry: round(entry.at * 1000))
    return entries


def _ms(now: float, created: float) -> str:
    """The time of a line: ms after ``created``, or ``@`` and ms since the epoch without it."""
    if created:
        return str(round((now - created) * 1000))
    return f"@{round(now * 1000)}"


def record(
    ops: Sequence[Any], now: float, delivered: Callable[[int], str] | None = None
) -> History | None:
    """The history lines that journal operations ``ops`` record, in order (or ``None``).

    ``delivered`` gives a push consumer's fields after the attempt
    (`history_codec.delivered_fragment`, cached per consumer).
    """
    # Imported here: journal imports this module for its operation types.
    from .journal import AckOp, DeadLetter, DeliverOp, Drop, Fail, Insert, Requeue, Restore

    ids: list[int] = []
    lines: list[str] = []
    id_of = ids.append
    line_of = lines.append
    tails: dict[int | None, str] = {None: ""}
    pulled = False
    # The three of every message first, their times inline (the hot path).
    for op in ops:
        kind = type(op)
        if kind is DeliverOp:
            if op.consumer is None:
                pulled = True
            id_of(op.id)
            tail = tails.get(op.consumer)
            if tail is None:
                tail = tails[op.consumer] = "" if delivered is None else delivered(op.consumer)
            created = op.created
            at = round((now - created) * 1000) if created else _ms(now, 0.0)
            line_of(f"{at}d{op.attempt}{tail}\n")
        elif kind is AckOp:
            id_of(op.id)
            created = op.created
            at = round((op.at - created) * 1000) if created else _ms(op.at, 0.0)
            line_of(f"{at}a\n")
        elif kind is Insert:
            entry = op.entry
            created = entry.created_at
            id_of(entry.id)
            at = round((now - created) * 1000) if created else _ms(now, 0.0)
            line_of(f"{at}p{op.origin}\n")
            if entry.deliver_at > now:
                id_of(entry.id)
                line_of(f"{at}w{round((entry.deliver_at - created) * 1000)}\n")
        elif kind is Requeue:
            id_of(op.id)
            at = _ms(now, op.created)
            if op.trigger != "nack":
                line_of(f"{at}{'g' if op.trigger == 'gone' else 'l'}{op.attempt}\n")
            elif op.deliver_at:
                delay = max(0, round((op.deliver_at - now) * 1000))
                line_of(f"{at}n{token(op.reason)} {delay}\n")
            elif op.reason is not None:
                line_of(f"{at}n{token(op.reason)}\n")
            else:
                line_of(f"{at}n\n")
        elif kind is Fail:
            id_of(op.id)
            line_of(f"{_ms(op.at, op.created)}f{token(op.reason)}\n")
        elif kind is DeadLetter:
            id_of(op.id)
            fields = f"{token(op.source)} {token(op.target)} {token(op.reason)}"
            line_of(f"{_ms(now, op.created)}x{fields}\n")
        elif kind is Drop:
            id_of(op.id)
            code = {"expired": "e", "cancelled": "c"}.get(op.why, "o")
            fields = token(op.by) if op.by else ""
            if code == "o" and op.why and op.why != "dropped":
                # Why it was dropped (``maxlen``...): the line's reason, in place of "dropped".
                fields = f"{token(op.by)} {token(op.why)}"
            line_of(f"{_ms(now, op.created)}{code}{fields}\n")
        elif kind is Restore:
            id_of(op.id)
            by = f" {token(op.by)}" if op.by else ""
            line_of(f"{_ms(now, op.created)}r{token(op.queue)}{by}\n")
    return History(ids, lines, pulled) if ids else None

"""The life story of every message: history events derived from journal operations.

Each operation a queue's state journals (publish, delivery, settlement,
dead-lettering, ...) says what happened to a message; `derive` turns a
batch of them into `Event` operations, written right behind them into the
same write-behind buffer, so they join the same group commit and cost one
row per event there (no extra round trip). Storage keeps them in a table
keyed by message id and deletes them with the message.

`SetResult` is the result an ack carried, kept with the message.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["HISTORY_EVENTS", "Event", "HistoryEntry", "SetResult", "decode", "derive", "encode"]

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


class Event(msgspec.Struct, frozen=True, gc=False):
    """One history event of message ``id`` at ``at`` with its details (``detail``)."""

    id: int
    at: float
    event: str
    detail: dict[str, Any] | None = None


class SetResult(msgspec.Struct, frozen=True, gc=False):
    """The JSON result an ack of message ``id`` carried."""

    id: int
    result: bytes


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event as stored (compact: ``[at, event, detail]``) and shown."""

    at: float
    event: str
    detail: dict[str, Any] | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[Any])


def encode(event: Event) -> str:
    """The stored form of an event: one JSON line ``[at, event(, detail)]`` (25-100 bytes).

    A message's events are these lines, appended to its row's ``history``
    column (text, so that SQL appends them with ``||`` on both backends).
    """
    if event.detail is None:
        return _encoder.encode((event.at, event.event)).decode() + "\n"
    return _encoder.encode((event.at, event.event, event.detail)).decode() + "\n"


def decode(history: str | None) -> list[HistoryEntry]:
    """The events of a stored ``history`` column, in order."""
    if not history:
        return []
    entries = []
    for line in history.splitlines():
        if line:
            at, event, *detail = _decoder.decode(line)
            entries.append(
                HistoryEntry(at=float(at), event=str(event), detail=detail[0] if detail else None)
            )
    return entries


@functools.lru_cache(maxsize=4096)
def _consumer(label: str) -> dict[str, Any]:
    """``transport`` and ``user`` from a consumer label such as ``"ws alice 10.0.0.7"``.

    Cached (one parse per consumer, not per delivery); callers must not change the dict.
    """
    parts = label.split()
    detail: dict[str, Any] = {}
    if parts:
        detail["transport"] = parts[0]
    if len(parts) > 1:
        detail["user"] = parts[1]
    return detail


def derive(
    queue: str, ops: Sequence[Any], now: float, consumer_label: Callable[[int], str | None]
) -> list[Event]:
    """The history events that journal operations ``ops`` of ``queue`` record, in order.

    ``consumer_label`` names a push consumer by id (its transport and user).
    """
    # Imported here: journal imports this module for its operation types.
    from .journal import AckOp, DeadLetter, DeliverOp, Drop, Fail, Insert, Requeue, Restore

    events: list[Event] = []
    append = events.append
    for op in ops:
        kind = type(op)
        if kind is Insert:
            entry = op.entry
            append(Event(entry.id, now, "published"))
            if entry.deliver_at > now:
                append(Event(entry.id, now, "delayed", {"until": entry.deliver_at}))
        elif kind is DeliverOp:
            detail: dict[str, Any] = {"attempt": op.attempt}
            if op.consumer is not None:
                detail["consumer"] = op.consumer
                label = consumer_label(op.consumer)
                if label:
                    detail |= _consumer(label)
            else:
                detail["transport"] = "pull"
            append(Event(op.id, now, "delivered", detail))
        elif kind is AckOp:
            append(Event(op.id, op.at, "acked"))
        elif kind is Requeue:
            if op.trigger != "nack":
                gone = {"attempt": op.attempt, "reason": "consumer gone"}
                append(
                    Event(
                        op.id,
                        now,
                        "lease_expired",
                        gone if op.trigger == "gone" else gone | {"reason": "lease expired"},
                    )
                )
            else:
                nacked: dict[str, Any] = {"requeue": True, "reason": op.reason}
                if op.deliver_at:
                    nacked["delay_ms"] = max(0, round((op.deliver_at - now) * 1000))
                append(Event(op.id, now, "nacked", nacked))
        elif kind is Fail:
            append(Event(op.id, op.at, "failed", {"reason": op.reason}))
        elif kind is DeadLetter:
            append(
                Event(
                    op.id,
                    now,
                    "dead_lettered",
                    {"from": op.source, "to": op.target, "reason": op.reason},
                )
            )
        elif kind is Drop:
            why = op.why or "dropped"
            append(Event(op.id, now, why if why in HISTORY_EVENTS else "dropped", {"reason": why}))
        elif kind is Restore:
            retried: dict[str, Any] = {"to": op.queue}
            if op.by:
                retried["by"] = op.by
            append(Event(op.id, now, "retried", retried))
    return events

"""The stored form of a message's history: one short text line per event, and its decoder.

A line is ``<time><code>[<field>[ <field>...]]`` ended by ``\\n``:

* ``time``: integer milliseconds after the message's ``created_at`` (the
  row holds it anyway), or ``@`` and milliseconds since the Unix epoch when
  the writer did not know ``created_at``;
* ``code``: one letter per event (`CODES`);
* fields: positional, per code (`FIELDS`), trailing absent ones left out,
  an absent one in between written ``-``; a field is a bare token, or a JSON
  string when it holds a space, a quote, a backslash, a control character,
  or is empty or ``-``.

So ``published`` over REST by alice, ``delivered`` (attempt 1, pulled) and
``acked`` read ``0prest alice\\n3d1\\n5a\\n`` (21 bytes), where the first form
(JSON lines ``[at, event, detail]``, 120-180 bytes) is still read: rows
written by earlier builds keep it, and an old row may get new lines appended.
Decoding gives back the same events and details as the first form, with
times to the millisecond.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NamedTuple

import msgspec

__all__ = [
    "CODES",
    "FIELDS",
    "DecodedEvent",
    "decode_lines",
    "delivered_fragment",
    "origin_fragment",
    "token",
]

CODES = {
    "p": "published",
    "w": "delayed",
    "d": "delivered",
    "a": "acked",
    "n": "nacked",
    "l": "lease_expired",
    "g": "lease_expired",
    "f": "failed",
    "x": "dead_lettered",
    "r": "retried",
    "e": "expired",
    "o": "dropped",
    "c": "cancelled",
    "s": "result",
}
"""Event names by code (``l``: the lease ran out, ``g``: its consumer went away)."""

FIELDS: dict[str, tuple[tuple[str, type], ...]] = {
    "p": (("transport", str), ("user", str), ("topic", str), ("schedule", str)),
    "w": (("until", float),),
    "d": (("attempt", int), ("consumer", int), ("transport", str), ("user", str)),
    "n": (("reason", str), ("delay_ms", int)),
    "l": (("attempt", int),),
    "g": (("attempt", int),),
    "f": (("reason", str),),
    "x": (("from", str), ("to", str), ("reason", str)),
    "r": (("to", str), ("by", str)),
    "e": (("by", str),),
    "o": (("by", str), ("reason", str)),
    "c": (("by", str),),
}
"""The positional fields of each code: detail key and type (``until``: ms after ``created_at``)."""

_LINE = re.compile(r"(@?)(-?\d+)([a-zA-Z])(.*)")
_FIELD = re.compile(r'"(?:[^"\\]|\\.)*"|[^ ]+')
_BARE = re.compile(r'[^\s"\\\x00-\x1f]+')
_old_line = msgspec.json.Decoder(list[Any])
_string = msgspec.json.Decoder(str)
_encode = msgspec.json.encode


class DecodedEvent(NamedTuple):
    """One event read back: its time (Unix seconds), name and details."""

    at: float
    event: str
    detail: dict[str, Any] | None


def token(value: str | None) -> str:
    """A text field as stored: bare when it can be, else a JSON string; ``-`` for none."""
    if value is None:
        return "-"
    if value != "-" and _BARE.fullmatch(value):
        return value
    return _encode(value).decode()


@lru_cache(maxsize=4096)
def origin_fragment(
    transport: str, user: str | None, topic: str | None = None, schedule: str | None = None
) -> str:
    """The fields of a ``published`` line: who published over what (cached per publisher)."""
    fields = [transport, user, topic, schedule]
    while fields[-1] is None:
        fields.pop()
    return " ".join(map(token, fields))


@lru_cache(maxsize=4096)
def delivered_fragment(consumer: int, label: str) -> str:
    """The fields after ``attempt`` of a push delivery to ``consumer`` (label ``"ws alice ..."``).

    Cached: one parse per consumer, not per delivery.
    """
    parts = label.split()
    transport = token(parts[0] if parts else None)
    user = token(parts[1] if len(parts) > 1 else None)
    return f" {consumer} {transport} {user}"


def _field(raw: str, kind: type) -> Any:
    if raw == "-":
        return None
    if raw[0] == '"':
        return _string.decode(raw)
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    return raw


def _detail(code: str, rest: str, created: float) -> dict[str, Any] | None:
    values = {}
    for (key, kind), raw in zip(FIELDS.get(code, ()), _FIELD.findall(rest), strict=False):
        value = _field(raw, kind)
        if value is not None:
            values[key] = value
    if code == "d":
        detail: dict[str, Any] = {"attempt": values.get("attempt", 0)}
        if "consumer" in values:
            if values.get("transport") == "webhook" and "user" in values:
                # A webhook consumer's label names the webhook where others name a user.
                values["webhook"] = values.pop("user")
            return detail | values
        return detail | {"transport": "pull"}
    if code == "n":
        # The first form always named the reason (``None`` if none) beside ``requeue``.
        nacked: dict[str, Any] = {"requeue": True, "reason": values.get("reason")}
        if "delay_ms" in values:
            nacked["delay_ms"] = values["delay_ms"]
        return nacked
    if code in "lg":
        reason = "lease expired" if code == "l" else "consumer gone"
        return {"attempt": values.get("attempt", 0), "reason": reason}
    if code in "eoc":
        return {"reason": CODES[code]} | values
    if code == "w" and "until" in values:
        return {"until": created + values["until"] / 1000}
    if code == "x" and "reason" not in values:
        values["reason"] = None
    return values or None


def decode_lines(history: str, created: float) -> list[DecodedEvent]:
    """The events of a stored ``history`` of a message created at ``created``, in order.

    Reads both forms, line by line (an old row may end with new lines).
    """
    events: list[DecodedEvent] = []
    # Not `splitlines`: a JSON string may hold U+2028 or U+0085, which it would split at.
    for line in history.split("\n"):
        if not line:
            continue
        if line[0] == "[":
            at, event, *detail = _old_line.decode(line)
            events.append(DecodedEvent(float(at), str(event), detail[0] if detail else None))
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            continue  # not ours: skip rather than hide the rest of the story
        absolute, ms, code, rest = match.groups()
        at = int(ms) / 1000 + (0.0 if absolute else created)
        events.append(DecodedEvent(at, CODES.get(code, code), _detail(code, rest, created)))
    return events

"""A schedule's row, as both backends store it: the definition as one blob, state in columns.

The definition (`broker_core.schedules.Schedule` without its state) is
MessagePack, so a field added later decodes from old rows with its
default. What changes after creation (``paused``, ``resumed_at``,
``last_fired``) has columns of its own: a fire updates one column in the
batch of its message, never the blob.
"""

from __future__ import annotations

from typing import Any

import msgspec

from broker_core.schedules import Schedule

__all__ = ["SCHEDULE_COLUMNS", "decode_schedule", "encode_schedule"]

SCHEDULE_COLUMNS = "queue, name, definition, created_at, paused, resumed_at, last_fired"
"""The columns `decode_schedule` reads, in its order."""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Schedule)


def encode_schedule(schedule: Schedule) -> bytes:
    """The definition blob of ``schedule`` (its state columns are written beside it)."""
    return _encoder.encode(
        msgspec.structs.replace(schedule, paused=False, resumed_at=0.0, last_fired=None)
    )


def decode_schedule(row: Any) -> Schedule:
    """A `Schedule` from a row of `SCHEDULE_COLUMNS`."""
    queue, name, definition, created_at, paused, resumed_at, last_fired = row
    return msgspec.structs.replace(
        _decoder.decode(bytes(definition)),
        queue=queue,
        name=name,
        created_at=created_at,
        paused=bool(paused),
        resumed_at=resumed_at,
        last_fired=last_fired,
    )

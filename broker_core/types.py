"""Enums shared by every layer of the broker.

Ids are plain ``int`` and ``str``: the ``NewType`` ids that stood here were
never used, and wrapping every id a transport decodes would add casts, not
checks.
"""

from __future__ import annotations

import enum

__all__ = ["MessageStatus", "Overflow"]


class MessageStatus(enum.IntEnum):
    """Where a message is in its lifecycle (stored as an integer)."""

    PENDING = 0
    PROCESSING = 1
    PROCESSED = 2
    FAILED = 3
    ENDED = 4
    """Cancelled, expired or dropped with no dead-letter queue: a body-less row kept
    (for the processed retention) only so that its history and why it ended stay
    readable (``last_error``: ``cancelled``, ``expired``, ``maxlen``...). It counts
    nowhere and is never browsed."""

    @property
    def label(self) -> str:
        """The lowercase name used on the wire (``"pending"``, ...)."""
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> MessageStatus:
        """Return the status named by ``label``; raise ``ValueError`` if there is none."""
        try:
            return cls[label.upper()]
        except KeyError:
            raise ValueError(f"unknown status {label!r}") from None


class Overflow(enum.StrEnum):
    """What a queue does when a publish would pass ``max_length`` or ``max_bytes``."""

    REJECT_PUBLISH = "reject_publish"
    DROP_HEAD = "drop_head"

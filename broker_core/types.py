"""Identifier types and enums shared by every layer of the broker."""

from __future__ import annotations

import enum
from typing import NewType

__all__ = [
    "ConsumerId",
    "MessageId",
    "MessageStatus",
    "Overflow",
    "QueueName",
]

QueueName = NewType("QueueName", str)
"""A queue's name: 1-200 characters of ``[A-Za-z0-9._-]``."""

MessageId = NewType("MessageId", int)
"""A message's id, unique within one broker's storage and increasing with publish order."""

ConsumerId = NewType("ConsumerId", int)
"""A push consumer's id, unique within one broker process."""


class MessageStatus(enum.IntEnum):
    """Where a message is in its lifecycle (stored as an integer)."""

    PENDING = 0
    PROCESSING = 1
    PROCESSED = 2
    FAILED = 3

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

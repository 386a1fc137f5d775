"""`Reconnect`: whether and when the client connects again, without I/O.

The connection loop (`transports.client.client.Client`) reports what
happened (the handshake was refused with a status, the broker could not be
reached, a connection was made, a connection was lost with a close code) and
does the `Step` it is told; between attempts it sleeps `Reconnect.wait`
seconds: exponential backoff from the first to the longest delay, with
jitter so that many clients cut off at once don't come back at once.
"""

from __future__ import annotations

import enum

__all__ = ["CLOSE_EXPIRED", "FATAL_STATUSES", "Reconnect", "Step"]

FATAL_STATUSES = frozenset({400, 403, 404})
"""Handshake answers that retrying won't change."""

CLOSE_EXPIRED = 4001
"""The broker's close code for an access token that expired (`transports.ws.CLOSE_EXPIRED`)."""


class Step(enum.Enum):
    """What the connection loop does next."""

    RETRY = "retry"
    """Wait, then connect again."""
    RENEW = "renew"
    """Get a new access token, then wait and connect again."""
    RENEW_NOW = "renew_now"
    """Get a new access token and connect again at once."""
    GIVE_UP = "give_up"
    """Fail everything waiting: no connection will come."""


class Reconnect:
    """The reconnection policy of one connection loop.

    Args:
        backoff: the first and the longest delay between attempts, in seconds.
        reconnect: whether a lost or failed connection is tried again at all.
    """

    def __init__(self, backoff: tuple[float, float], reconnect: bool) -> None:
        self.initial, self.longest = backoff
        self.reconnect = reconnect
        self.delay = self.initial

    def refused(self, status: int, can_renew: bool) -> Step:
        """The handshake was answered ``status``; ``can_renew``: a new token can be had."""
        if status == 401 and can_renew:
            return Step.RENEW
        if status == 401 or status in FATAL_STATUSES or not self.reconnect:
            return Step.GIVE_UP
        return Step.RETRY

    def unreachable(self) -> Step:
        """The broker could not be reached (or the handshake failed without a status)."""
        return Step.RETRY if self.reconnect else Step.GIVE_UP

    def connected(self) -> None:
        """A connection was made: the next loss starts again from the first delay."""
        self.delay = self.initial

    def lost(self, close_code: int | None, can_renew: bool) -> Step:
        """The connection ended with ``close_code`` (``None``: without a close frame)."""
        if not self.reconnect:
            return Step.GIVE_UP
        if close_code == CLOSE_EXPIRED and can_renew:
            return Step.RENEW_NOW
        return Step.RETRY

    def wait(self, jitter: float) -> float:
        """Seconds to sleep before the next attempt; ``jitter`` is drawn from [0.5, 1].

        Each call doubles the delay of the next, up to the longest.
        """
        wait = self.delay * jitter
        self.delay = min(self.longest, self.delay * 2)
        return wait

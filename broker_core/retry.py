"""A queue's retry policy: how long a requeued message waits before it goes again.

Google Pub/Sub's ``RetryPolicy`` and NATS's ``NakWithDelay`` in one option:
without a policy a nacked message comes straight back (and can burn
``max_attempts`` in milliseconds); with one, the n-th requeue of a message
waits ``min(max_ms, min_ms * multiplier ** (n - 1))`` (exponential),
``min(max_ms, min_ms * n)`` (linear) or ``min_ms`` (fixed), spread by
``+/- jitter``. Meanwhile the message is pending with ``deliver_at`` set,
on the same timer heap as a delayed publish, so it blocks nobody.

Pure arithmetic: the caller passes the random draw (`QueueState` owns the
generator, so a test can fix it).
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, Literal

import msgspec

__all__ = [
    "MAX_DELAY_MS",
    "Backoff",
    "RetryPolicy",
    "backoff_ms",
    "requeue_delay_ms",
]

MAX_DELAY_MS = 2**32 - 1
"""The cap of every delay (about 49.7 days), as for ``delay_ms`` and RabbitMQ's TTLs."""

DelayMs = Annotated[int, msgspec.Meta(ge=1, le=MAX_DELAY_MS)]


class Backoff(enum.StrEnum):
    """How the wait grows with each requeue."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIXED = "fixed"


class RetryPolicy(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Queue option ``retry``: the back-off between redeliveries of a requeued message.

    ``on`` says which requeues wait: ``nack`` (a nack with requeue) and
    ``expired`` (a lease that ran out). A consumer that disconnects gives its
    messages back at once: that is not the message's failure.

    Raises:
        ValueError: (a 422 naming the field) ``max_ms`` below ``min_ms``.
    """

    backoff: Backoff = Backoff.EXPONENTIAL
    min_ms: DelayMs = 1000
    max_ms: DelayMs = 600_000
    multiplier: Annotated[float, msgspec.Meta(ge=1.0, le=100.0)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.1
    on: Annotated[list[Literal["nack", "expired"]], msgspec.Meta(max_length=2)] = msgspec.field(
        default_factory=lambda: ["nack", "expired"]
    )

    def __post_init__(self) -> None:
        if self.max_ms < self.min_ms:
            raise ValueError("max_ms must be at least min_ms (`max_ms`)")


def backoff_ms(policy: RetryPolicy, requeues: int) -> float:
    """The wait before the ``requeues``-th requeue goes again, without jitter, in ms."""
    n = max(1, requeues)
    if policy.backoff is Backoff.FIXED:
        wait = float(policy.min_ms)
    elif policy.backoff is Backoff.LINEAR:
        wait = float(policy.min_ms) * n
    else:
        # multiplier ** n overflows a float long before n stops growing: past
        # the cap (compared in log space), the cap is the answer.
        if (n - 1) * math.log(policy.multiplier) >= math.log(policy.max_ms / policy.min_ms):
            return float(policy.max_ms)
        wait = policy.min_ms * policy.multiplier ** (n - 1)
    return min(float(policy.max_ms), wait)


def requeue_delay_ms(
    policy: RetryPolicy | None,
    requeues: int,
    trigger: Literal["nack", "expired", "gone"],
    draw: float,
    override_ms: int | None = None,
) -> float:
    """How long a message given back for the ``requeues``-th time waits, in ms (0: at once).

    Args:
        policy: the queue's retry policy, or ``None``.
        requeues: how many times it has been given back, this one included.
        trigger: why: a nack, an expired lease, or its consumer went away.
        draw: a uniform random number in [0, 1) for the jitter.
        override_ms: a nack's own ``delay_ms``, which wins over the policy.
    """
    if override_ms is not None:
        return float(override_ms)
    if policy is None or trigger not in policy.on:
        return 0.0
    wait = backoff_ms(policy, requeues)
    if policy.jitter:
        wait *= 1.0 + policy.jitter * (2.0 * draw - 1.0)
    return max(0.0, wait)

"""`RateSampler`: publish, deliver, ack and nack rates over the last minute.

Once a second a background task reads the queues' counters from
`Broker.infos` (``published_total``, ``delivered_total``, ``acked_total``, ``nacked_total``)
and appends their running sums to a 61-slot ring, so the oldest sample is a
minute old. A rate is the difference between now and the oldest sample over
the time between them. Nothing is done per message: the actors count anyway.

The sums are kept monotonic across queue deletion and re-creation: each
sample adds what every queue counted since the previous one, so a deleted
queue stops contributing instead of pulling the sum down.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

import msgspec
from loguru import logger

if TYPE_CHECKING:
    from datetime import datetime

    from broker_core.broker import Broker
    from broker_core.messages import QueueInfo

__all__ = ["WINDOW_S", "RateSampler", "Rates"]

WINDOW_S = 60
"""The rates cover this many seconds (once the broker has run that long)."""

_Counts = tuple[int, int, int, int]


class Rates(msgspec.Struct, frozen=True, kw_only=True):
    """Messages per second over ``window_s`` seconds (0 before the first sample)."""

    publish_per_s: float
    deliver_per_s: float
    ack_per_s: float
    nack_per_s: float
    window_s: float


def _counts(info: QueueInfo) -> _Counts:
    return (info.published_total, info.delivered_total, info.acked_total, info.nacked_total)


class RateSampler:
    """Samples the broker's message counters into a ring of per-second totals.

    Call `sample` once a second (`run` does) and `rates` whenever a reader
    wants them; both take a monotonic ``now`` in seconds.

    Args:
        broker: the broker whose actors are sampled.
        interval_s: the time between two samples of `run`.
    """

    def __init__(self, broker: Broker, interval_s: float = 1.0) -> None:
        self._broker = broker
        self.interval_s = interval_s
        self._seen: dict[str, tuple[datetime, _Counts]] = {}
        self._sums = (0, 0, 0, 0)
        self._ring: deque[tuple[float, _Counts]] = deque(maxlen=WINDOW_S + 1)

    def _advance(self) -> _Counts:
        """Add what each queue counted since the last look to the running sums."""
        broker = self._broker
        seen = self._seen
        current: dict[str, tuple[datetime, _Counts]] = {}
        published, delivered, acked, nacked = self._sums
        for info in broker.infos():
            name = info.name
            counts = _counts(info)
            before = seen.get(name)
            # A new queue (or one deleted and created again) counts from zero.
            same = before is not None and before[0] == info.created_at
            base = before[1] if before is not None and same else (0, 0, 0, 0)
            published += counts[0] - base[0]
            delivered += counts[1] - base[1]
            acked += counts[2] - base[2]
            nacked += counts[3] - base[3]
            current[name] = (info.created_at, counts)
        self._seen = current
        self._sums = (published, delivered, acked, nacked)
        return self._sums

    def sample(self, now: float) -> None:
        """Append the running sums at ``now`` to the ring."""
        self._ring.append((now, self._advance()))

    def rates(self, now: float) -> Rates:
        """Rates from the oldest sample in the ring to the counters at ``now``."""
        sums = self._advance()
        if not self._ring:
            return Rates(publish_per_s=0, deliver_per_s=0, ack_per_s=0, nack_per_s=0, window_s=0)
        then, old = self._ring[0]
        window = now - then
        if window <= 0:
            return Rates(publish_per_s=0, deliver_per_s=0, ack_per_s=0, nack_per_s=0, window_s=0)
        return Rates(
            publish_per_s=(sums[0] - old[0]) / window,
            deliver_per_s=(sums[1] - old[1]) / window,
            ack_per_s=(sums[2] - old[2]) / window,
            nack_per_s=(sums[3] - old[3]) / window,
            window_s=window,
        )

    async def run(self) -> None:
        """Sample every ``interval_s`` until cancelled."""
        while True:
            try:
                self.sample(time.monotonic())
            except Exception as exc:  # pragma: no cover - sampling reads counters only
                logger.opt(exception=exc).warning("rate sampling failed")
            await asyncio.sleep(self.interval_s)

"""`Telemetry`: the observability state of one running broker.

One `Telemetry` belongs to each `BrokerContext` (`telemetry_of`), so every
app built by `create_app` counts on its own (tests build many). It holds the
request counters the middleware increments, the rate sampler, the cached
system readings and the garbage collector's pauses. ``/stats``, ``/metrics``
and GraphQL read it; nothing in it is touched per message.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from .collector import CollectorPauses
from .rates import RateSampler
from .system import SystemSampler

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager

    from litestar import Litestar

    from ..context import BrokerContext

__all__ = [
    "LATENCY_BUCKETS_S",
    "UNMATCHED",
    "RequestCounters",
    "RouteSeries",
    "Telemetry",
    "sampler_lifespan",
    "telemetry_of",
]

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the request latency histogram; ``+Inf`` is implied."""

UNMATCHED = "<unmatched>"
"""Route label of requests that matched no route (routing 404s and 405s)."""

WEBSOCKET = "WS"
"""Method label of WebSocket upgrades."""

# Anything else a client sends as a method is counted as "OTHER", so that the
# label set stays bounded whatever arrives.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", WEBSOCKET}
)


class RouteSeries:
    """Counts and latencies of one route template and method."""

    __slots__ = ("buckets", "count", "statuses", "sum_s")

    def __init__(self) -> None:
        self.count = 0
        self.sum_s = 0.0
        self.statuses: dict[int, int] = {}
        # Per-bucket (not cumulative) counts; the last slot is +Inf.
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)


class RequestCounters:
    """Requests answered, by route template, method and status, with latencies.

    Keys are route templates (``/queues/{name}``), never raw paths, and methods
    outside the HTTP set are folded into ``OTHER``: the maps stay as small as
    the route table.
    """

    __slots__ = ("by_status", "routes", "total")

    def __init__(self) -> None:
        self.total = 0
        self.by_status: dict[int, int] = {}
        self.routes: dict[str, dict[str, RouteSeries]] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one response: ``seconds`` is the time until its status was sent."""
        if method not in _METHODS:
            method = "OTHER"
        self.total += 1
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        methods = self.routes.get(route)
        if methods is None:
            methods = self.routes[route] = {}
        series = methods.get(method)
        if series is None:
            series = methods[method] = RouteSeries()
        series.count += 1
        series.sum_s += seconds
        statuses = series.statuses
        statuses[status] = statuses.get(status, 0) + 1
        series.buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1


class Telemetry:
    """Request counters, message rates and system readings of one broker.

    Args:
        ctx: the broker context it observes.
    """

    def __init__(self, ctx: BrokerContext) -> None:
        self.requests = RequestCounters()
        self.rates = RateSampler(ctx.broker)
        self.system = SystemSampler(ctx.settings.data_dir)
        self.collector = CollectorPauses()
        self._sampler: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling message rates once a second and timing the collector (app lifespan)."""
        self.collector.install()
        if self._sampler is None:
            self._sampler = asyncio.get_running_loop().create_task(
                self.rates.run(), name="rate-sampler"
            )

    async def stop(self) -> None:
        """Stop the sampler task and the collector's timing."""
        self.collector.remove()
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


_telemetry: WeakKeyDictionary[BrokerContext, Telemetry] = WeakKeyDictionary()


def telemetry_of(ctx: BrokerContext) -> Telemetry:
    """The `Telemetry` of ``ctx``, created on first use."""
    telemetry = _telemetry.get(ctx)
    if telemetry is None:
        telemetry = _telemetry[ctx] = Telemetry(ctx)
    return telemetry


def sampler_lifespan(
    ctx: BrokerContext,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """A Litestar lifespan hook that runs the rate sampler while the app runs.

    List it after the hook that opens ``ctx``: it samples the broker's actors.
    """

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        telemetry = telemetry_of(ctx)
        telemetry.start()
        try:
            yield
        finally:
            await telemetry.stop()

    return lifespan

"""``GET /metrics``: the broker's metrics, exposed through ``prometheus_client``.

The values live where they are counted (the request middleware, the actors,
the write-behind buffer, psutil); `BrokerCollector` is a ``prometheus_client``
custom collector that reads them at scrape time, so format, escaping and
content negotiation (the Prometheus text format 0.0.4, or OpenMetrics 1.0
when the scraper's ``Accept`` asks for ``application/openmetrics-text``) are
the library's job. Families:

HTTP (from the request middleware)
    ``broker_http_requests_total{route,method,status}`` counter;
    ``broker_http_request_duration_seconds{route,method}`` histogram (time to
    the status line; `LATENCY_BUCKETS_S`).
Messages, per queue (from the actors' counters)
    ``broker_messages_published_total``, ``broker_messages_delivered_total``,
    ``broker_messages_acked_total``, ``broker_messages_nacked_total``
    counters ``{queue}`` (they restart at 0 with the broker, as Prometheus
    counters may); ``broker_queue_messages{queue,status}`` gauge with status
    ``pending`` (including delayed), ``delayed``, ``processing``,
    ``processed`` and ``failed``; ``broker_queue_consumers{queue}`` gauge;
    ``broker_queues`` gauge.
Storage (from the write-behind buffer's counters)
    ``broker_storage_commit_seconds`` and ``broker_storage_batch_ops``
    summaries (``_count`` is the number of group commits, ``_sum`` their
    time and their operations: ``rate(_sum)/rate(_count)`` is the mean
    commit latency and batch size); ``broker_storage_commit_failures_total``
    counter; ``broker_storage_degraded`` and ``broker_storage_size_bytes``
    gauges.
Process (psutil, the names of Prometheus's client libraries)
    ``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
    ``process_virtual_memory_bytes``, ``process_open_fds``,
    ``process_threads``, ``process_start_time_seconds``;
    ``python_gc_collections_total{generation}`` counter,
    ``broker_gc_pause_seconds_total{generation}`` counter,
    ``broker_gc_longest_pause_seconds`` and ``broker_gc_frozen_objects``
    gauges (`transports.observability.collector`); plus
    ``broker_info{version,framework,storage}`` (always 1) and
    ``broker_start_time_seconds``.

Any user may scrape it, and a service token with the ``metrics:read`` scope
(`broker_core.service_tokens`); per-queue series of a non-admin user cover
only the queues it has a permission on, while admins and ``metrics:read``
tokens see every queue.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import psutil
from litestar import Request, Response, get
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.exposition import choose_encoder

from broker_core.permissions import visible
from broker_core.service_tokens import METRICS_READ, require_scope

from ..context import ctx_of
from ..security import user_of
from ..webhooks.observe import webhook_metrics
from .stats import BROKER_VERSION, FRAMEWORK
from .telemetry import LATENCY_BUCKETS_S, telemetry_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from broker_core.auth import User

    from ..context import BrokerContext

__all__ = ["CONTENT_TYPE", "BrokerCollector", "get_metrics", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4"
"""The media type of the Prometheus text format, served unless OpenMetrics is asked for."""

_BOUNDS = [*(repr(bound) for bound in LATENCY_BUCKETS_S), "+Inf"]

_MESSAGE_COUNTERS = (
    ("broker_messages_published", "published_total", "Messages published to the queue."),
    ("broker_messages_delivered", "delivered_total", "Deliveries (leases) of the queue."),
    ("broker_messages_acked", "acked_total", "Messages acknowledged (processed)."),
    ("broker_messages_nacked", "nacked_total", "Negative acknowledgements."),
)


class BrokerCollector:
    """A ``prometheus_client`` custom collector of one broker, as one caller may see it.

    Built per scrape: ``user`` decides which queues' series are collected.

    Args:
        ctx: the running broker.
        user: when given, not an admin and without ``metrics:read``, per-queue
            series cover only the queues it has a permission on.
    """

    def __init__(self, ctx: BrokerContext, user: User | None = None) -> None:
        self._ctx = ctx
        self._user = user

    def collect(self) -> Iterator[Metric]:
        """Every family, read from the running broker now."""
        yield from self._http()
        yield from self._queues()
        yield from self._storage()
        yield from self._process()

    def _http(self) -> Iterator[Metric]:
        routes = telemetry_of(self._ctx).requests.routes
        requests = CounterMetricFamily(
            "broker_http_requests",
            "HTTP responses and WebSocket upgrades.",
            labels=("route", "method", "status"),
        )
        latency = HistogramMetricFamily(
            "broker_http_request_duration_seconds",
            "Time from a request's arrival to its response's status line.",
            labels=("route", "method"),
        )
        for route, methods in routes.items():
            for method, series in methods.items():
                for status, count in sorted(series.statuses.items()):
                    requests.add_metric((route, method, str(status)), count)
                cumulative = 0
                buckets: list[tuple[str, float]] = []
                for bound, count in zip(_BOUNDS, series.buckets, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                latency.add_metric((route, method), buckets, series.sum_s)
        yield requests
        yield latency

    def _queues(self) -> Iterator[Metric]:
        broker = self._ctx.broker
        names = broker.queue_names()
        yield GaugeMetricFamily("broker_queues", "Queues in the broker.", value=len(names))
        user = self._user
        if user is not None and not user.admin and METRICS_READ not in (user.scopes or ()):
            names = [name for name in names if visible(user, name)]
        infos = broker.infos(names)
        for metric, attribute, help in _MESSAGE_COUNTERS:
            family = CounterMetricFamily(
                metric, help + " Restarts at 0 with the broker.", labels=("queue",)
            )
            for info in infos:
                family.add_metric((info.name,), getattr(info, attribute))
            yield family
        messages = GaugeMetricFamily(
            "broker_queue_messages", "Messages of the queue by status.", labels=("queue", "status")
        )
        consumers = GaugeMetricFamily(
            "broker_queue_consumers", "Push consumers subscribed to the queue.", labels=("queue",)
        )
        for info in infos:
            messages.add_metric((info.name, "pending"), info.pending)
            messages.add_metric((info.name, "delayed"), info.delayed)
            messages.add_metric((info.name, "processing"), info.processing)
            messages.add_metric((info.name, "processed"), info.processed)
            messages.add_metric((info.name, "failed"), info.failed)
            consumers.add_metric((info.name,), info.consumers)
        yield messages
        yield consumers
        yield from webhook_metrics(self._ctx.webhooks, names)

    def _storage(self) -> Iterator[Metric]:
        storage = self._ctx.storage
        stats = storage.batch_stats
        yield SummaryMetricFamily(
            "broker_storage_commit_seconds",
            "Time spent in group commits.",
            count_value=stats.batches,
            sum_value=stats.seconds,
        )
        yield SummaryMetricFamily(
            "broker_storage_batch_ops",
            "Operations per group commit.",
            count_value=stats.batches,
            sum_value=stats.ops,
        )
        yield CounterMetricFamily(
            "broker_storage_commit_failures", "Group commits that failed.", value=stats.failures
        )
        yield GaugeMetricFamily(
            "broker_storage_degraded",
            "1 while storage refuses writes.",
            value=int(storage.degraded is not None),
        )
        yield GaugeMetricFamily(
            "broker_storage_size_bytes", "Size of the storage files.", value=storage.size_bytes()
        )

    def _process(self) -> Iterator[Metric]:
        ctx = self._ctx
        process = telemetry_of(ctx).system.process
        with process.oneshot():
            cpu = process.cpu_times()
            memory = process.memory_info()
            threads = process.num_threads()
            created = process.create_time()
            try:
                fds: int | None = process.num_fds()
            except (AttributeError, psutil.Error):  # pragma: no cover - Windows
                fds = None
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "User and system CPU time of the process.",
            value=cpu.user + cpu.system,
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory of the process.", value=memory.rss
        )
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes", "Virtual memory of the process.", value=memory.vms
        )
        if fds is not None:
            yield GaugeMetricFamily(
                "process_open_fds", "Open file descriptors of the process.", value=fds
            )
        yield GaugeMetricFamily("process_threads", "Threads of the process.", value=threads)
        yield GaugeMetricFamily(
            "process_start_time_seconds", "Start of the process (Unix time).", value=created
        )
        collector = telemetry_of(ctx).collector
        passes = CounterMetricFamily(
            "python_gc_collections", "Garbage collector passes.", labels=("generation",)
        )
        for generation, count in enumerate(collector.passes):
            passes.add_metric((str(generation),), count)
        yield passes
        pauses = CounterMetricFamily(
            "broker_gc_pause_seconds",
            "Time the garbage collector stopped the process.",
            labels=("generation",),
        )
        for generation, seconds in enumerate(collector.seconds):
            pauses.add_metric((str(generation),), seconds)
        yield pauses
        yield GaugeMetricFamily(
            "broker_gc_longest_pause_seconds",
            "The longest garbage collector pass.",
            value=collector.longest_s,
        )
        yield GaugeMetricFamily(
            "broker_gc_frozen_objects",
            "Startup objects the collector never walks.",
            value=gc.get_freeze_count(),
        )
        yield GaugeMetricFamily(
            "broker_start_time_seconds", "Start of the broker (Unix time).", value=ctx.started_at
        )
        info = GaugeMetricFamily(
            "broker_info",
            "The broker's version, framework and storage backend.",
            labels=("version", "framework", "storage"),
        )
        info.add_metric((BROKER_VERSION, FRAMEWORK, ctx.storage.name), 1)
        yield info


def render_metrics(
    ctx: BrokerContext, *, user: User | None = None, accept: str = ""
) -> tuple[bytes, str]:
    """The exposition of the broker behind ``ctx`` and its media type.

    Args:
        ctx: the running broker.
        user: the caller (see `BrokerCollector`).
        accept: the scraper's ``Accept`` header: OpenMetrics when it asks for
            ``application/openmetrics-text``, else the text format 0.0.4.
    """
    # A registry per scrape: the collector is the caller's view, and a
    # registry without auto-describe never collects at registration.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(ctx, user))
    encode, media_type = choose_encoder(accept)
    return encode(registry), media_type


@get("/metrics", tags=["operations"], opt={"rate_limit": "admin"}, media_type=CONTENT_TYPE)
async def get_metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus metrics: requests, messages per queue, storage, process.

    Any user, or a service token with ``metrics:read``; OpenMetrics when asked for.
    """
    user = user_of(request)
    require_scope(user, METRICS_READ)
    body, media_type = render_metrics(
        ctx_of(request), user=user, accept=request.headers.get("accept", "")
    )
    return Response(body, media_type=media_type)

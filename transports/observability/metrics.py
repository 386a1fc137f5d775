"""``GET /metrics``: the broker's metrics in the Prometheus text format (version 0.0.4).

The exposition is written here by hand (``prometheus_client`` is only a test
dependency, used to parse it back). Families:

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

Any authenticated user may scrape it; like ``GET /queues``, the per-queue
series of a non-admin cover only the queues it has a permission on.
"""

from __future__ import annotations

import gc
import math
from typing import TYPE_CHECKING, Any

import psutil
from litestar import Request, Response, get

from broker_core.permissions import visible

from ..context import ctx_of
from ..security import user_of
from ..webhooks.observe import webhook_metrics
from .stats import BROKER_VERSION, FRAMEWORK
from .telemetry import LATENCY_BUCKETS_S, telemetry_of

if TYPE_CHECKING:
    from collections.abc import Iterable

    from broker_core.auth import User

    from ..context import BrokerContext

__all__ = ["CONTENT_TYPE", "get_metrics", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4"
"""The media type of the Prometheus text exposition format (Litestar adds the UTF-8 charset)."""

_BOUNDS = [*(repr(bound) for bound in LATENCY_BUCKETS_S), "+Inf"]


def escape_label(value: str) -> str:
    """Escape a label value: backslash, double quote and newline (exposition format)."""
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Exposition:
    """Lines of a text exposition, one family after another."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str) -> None:
        help = help.replace("\\", r"\\").replace("\n", r"\n")
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> None:
        text = ",".join(f'{key}="{escape_label(val)}"' for key, val in labels)
        if text:
            self.lines.append(f"{name}{{{text}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _http(out: _Exposition, ctx: BrokerContext) -> None:
    routes = telemetry_of(ctx).requests.routes
    out.family("broker_http_requests_total", "counter", "HTTP responses and WebSocket upgrades.")
    for route, methods in routes.items():
        for method, series in methods.items():
            for status, count in sorted(series.statuses.items()):
                labels = (("route", route), ("method", method), ("status", str(status)))
                out.sample("broker_http_requests_total", count, labels)
    name = "broker_http_request_duration_seconds"
    out.family(name, "histogram", "Time from a request's arrival to its response's status line.")
    for route, methods in routes.items():
        for method, series in methods.items():
            cumulative = 0
            for bound, count in zip(_BOUNDS, series.buckets, strict=True):
                cumulative += count
                bucket = (("route", route), ("method", method), ("le", bound))
                out.sample(f"{name}_bucket", cumulative, bucket)
            series_labels = (("route", route), ("method", method))
            out.sample(f"{name}_sum", series.sum_s, series_labels)
            out.sample(f"{name}_count", series.count, series_labels)


_MESSAGE_COUNTERS = (
    ("broker_messages_published_total", "published_total", "Messages published to the queue."),
    ("broker_messages_delivered_total", "delivered_total", "Deliveries (leases) of the queue."),
    ("broker_messages_acked_total", "acked_total", "Messages acknowledged (processed)."),
    ("broker_messages_nacked_total", "nacked_total", "Negative acknowledgements."),
)


def _queues(out: _Exposition, ctx: BrokerContext, user: User | None) -> None:
    broker = ctx.broker
    names = broker.queue_names()
    out.family("broker_queues", "gauge", "Queues in the broker.")
    out.sample("broker_queues", len(names))
    if user is not None and not user.admin:
        names = [name for name in names if visible(user, name)]
    infos = broker.infos(names)
    for metric, attribute, help in _MESSAGE_COUNTERS:
        out.family(metric, "counter", help + " Restarts at 0 with the broker.")
        for info in infos:
            out.sample(metric, getattr(info, attribute), (("queue", info.name),))
    out.family("broker_queue_messages", "gauge", "Messages of the queue by status.")
    for info in infos:
        for status, value in (
            ("pending", info.pending),
            ("delayed", info.delayed),
            ("processing", info.processing),
            ("processed", info.processed),
            ("failed", info.failed),
        ):
            out.sample("broker_queue_messages", value, (("queue", info.name), ("status", status)))
    out.family("broker_queue_consumers", "gauge", "Push consumers subscribed to the queue.")
    for info in infos:
        out.sample("broker_queue_consumers", info.consumers, (("queue", info.name),))
    webhook_metrics(out, ctx.webhooks, names)


def _storage(out: _Exposition, ctx: BrokerContext) -> None:
    storage = ctx.storage
    stats = storage.batch_stats
    out.family("broker_storage_commit_seconds", "summary", "Time spent in group commits.")
    out.sample("broker_storage_commit_seconds_sum", stats.seconds)
    out.sample("broker_storage_commit_seconds_count", stats.batches)
    out.family("broker_storage_batch_ops", "summary", "Operations per group commit.")
    out.sample("broker_storage_batch_ops_sum", stats.ops)
    out.sample("broker_storage_batch_ops_count", stats.batches)
    out.family("broker_storage_commit_failures_total", "counter", "Group commits that failed.")
    out.sample("broker_storage_commit_failures_total", stats.failures)
    out.family("broker_storage_degraded", "gauge", "1 while storage refuses writes.")
    out.sample("broker_storage_degraded", int(storage.degraded is not None))
    out.family("broker_storage_size_bytes", "gauge", "Size of the storage files.")
    out.sample("broker_storage_size_bytes", storage.size_bytes())


def _process(out: _Exposition, ctx: BrokerContext) -> None:
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
    out.family("process_cpu_seconds_total", "counter", "User and system CPU time of the process.")
    out.sample("process_cpu_seconds_total", cpu.user + cpu.system)
    out.family("process_resident_memory_bytes", "gauge", "Resident memory of the process.")
    out.sample("process_resident_memory_bytes", memory.rss)
    out.family("process_virtual_memory_bytes", "gauge", "Virtual memory of the process.")
    out.sample("process_virtual_memory_bytes", memory.vms)
    if fds is not None:
        out.family("process_open_fds", "gauge", "Open file descriptors of the process.")
        out.sample("process_open_fds", fds)
    out.family("process_threads", "gauge", "Threads of the process.")
    out.sample("process_threads", threads)
    out.family("process_start_time_seconds", "gauge", "Start of the process (Unix time).")
    out.sample("process_start_time_seconds", created)
    collector = telemetry_of(ctx).collector
    out.family("python_gc_collections_total", "counter", "Garbage collector passes.")
    for generation, passes in enumerate(collector.passes):
        out.sample("python_gc_collections_total", passes, (("generation", str(generation)),))
    out.family(
        "broker_gc_pause_seconds_total",
        "counter",
        "Time the garbage collector stopped the process.",
    )
    for generation, seconds in enumerate(collector.seconds):
        out.sample("broker_gc_pause_seconds_total", seconds, (("generation", str(generation)),))
    out.family("broker_gc_longest_pause_seconds", "gauge", "The longest garbage collector pass.")
    out.sample("broker_gc_longest_pause_seconds", collector.longest_s)
    out.family("broker_gc_frozen_objects", "gauge", "Startup objects the collector never walks.")
    out.sample("broker_gc_frozen_objects", gc.get_freeze_count())
    out.family("broker_start_time_seconds", "gauge", "Start of the broker (Unix time).")
    out.sample("broker_start_time_seconds", ctx.started_at)
    out.family("broker_info", "gauge", "The broker's version, framework and storage backend.")
    info = (("version", BROKER_VERSION), ("framework", FRAMEWORK), ("storage", ctx.storage.name))
    out.sample("broker_info", 1, info)


def render_metrics(ctx: BrokerContext, *, user: User | None = None) -> str:
    """The Prometheus text exposition of the broker behind ``ctx``.

    Args:
        ctx: the running broker.
        user: when given and not an admin, per-queue series cover only the
            queues it has a permission on.
    """
    out = _Exposition()
    _http(out, ctx)
    _queues(out, ctx, user)
    _storage(out, ctx)
    _process(out, ctx)
    return out.text()


@get(
    "/metrics",
    tags=["operations"],
    opt={"rate_limit": "admin"},
    media_type=CONTENT_TYPE,
)
async def get_metrics(request: Request[Any, Any, Any]) -> Response[str]:
    """Prometheus metrics: requests, messages per queue, storage, process (any user)."""
    text = render_metrics(ctx_of(request), user=user_of(request))
    return Response(text, media_type=CONTENT_TYPE)

"""What operators see of webhooks in ``/stats`` and ``/metrics`` (this node's figures)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from prometheus_client.metrics_core import Metric

    from .manager import Webhooks

__all__ = ["WebhookCounts", "webhook_counts", "webhook_metrics"]


class WebhookCounts(msgspec.Struct, frozen=True, kw_only=True):
    """One webhook in ``/stats``: its state and what it did on this node since it started."""

    id: str
    queue: str
    state: str
    in_flight: int
    deliveries: int
    failures: int
    latency_avg_ms: float | None
    last_error: str | None


def webhook_counts(webhooks: Webhooks, queues: Iterable[str]) -> list[WebhookCounts]:
    """The webhooks of ``queues`` (the ones the caller may see) with their counters."""
    shown = set(queues)
    out = []
    for view in webhooks.list():
        if view.queue not in shown:
            continue
        stats = webhooks.stats.get(view.id)
        count = stats.latency_count if stats is not None else 0
        average = round(stats.latency_s / count * 1000, 3) if stats is not None and count else None
        out.append(
            WebhookCounts(
                id=view.id,
                queue=view.queue,
                state=view.state.value,
                in_flight=view.in_flight,
                deliveries=view.deliveries,
                failures=view.failures,
                latency_avg_ms=average,
                last_error=view.last_error,
            )
        )
    return out


def webhook_metrics(webhooks: Webhooks, queues: Iterable[str]) -> Iterator[Metric]:
    """``broker_webhook_*`` families: deliveries, failures, latency summary, in flight, state."""
    shown = set(queues)
    rows = [(view, webhooks.stats.get(view.id)) for view in webhooks.list() if view.queue in shown]
    labels = ("queue", "webhook")
    deliveries = CounterMetricFamily(
        "broker_webhook_deliveries", "Webhook requests answered 2xx (acked).", labels=labels
    )
    failures = CounterMetricFamily(
        "broker_webhook_failures",
        "Webhook requests that failed (status, timeout, refused): nacked.",
        labels=labels,
    )
    latency = SummaryMetricFamily(
        "broker_webhook_latency_seconds", "Webhook request latency.", labels=labels
    )
    in_flight = GaugeMetricFamily(
        "broker_webhook_in_flight", "Webhook requests under way.", labels=labels
    )
    active = GaugeMetricFamily(
        "broker_webhook_active", "1 when the webhook delivers (not paused/disabled).", labels=labels
    )
    for view, stats in rows:
        key = (view.queue, view.id)
        deliveries.add_metric(key, view.deliveries)
        failures.add_metric(key, view.failures)
        latency.add_metric(
            key,
            count_value=stats.latency_count if stats else 0,
            sum_value=stats.latency_s if stats else 0.0,
        )
        in_flight.add_metric(key, view.in_flight)
        active.add_metric(key, 1 if view.state == "active" else 0)
    yield from (deliveries, failures, latency, in_flight, active)

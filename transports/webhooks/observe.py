"""What operators see of webhooks in ``/stats`` and ``/metrics`` (this node's figures)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable

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


class Exposition(Protocol):
    """The Prometheus text writer of `transports.observability.metrics`."""

    def family(self, name: str, kind: str, help: str) -> None: ...

    def sample(self, name: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> None: ...


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


def webhook_metrics(out: Exposition, webhooks: Webhooks, queues: Iterable[str]) -> None:
    """``broker_webhook_*`` families: deliveries, failures, latency summary, in flight, state."""
    rows = [
        (view, webhooks.stats.get(view.id)) for view in webhooks.list() if view.queue in set(queues)
    ]
    out.family(
        "broker_webhook_deliveries_total", "counter", "Webhook requests answered 2xx (acked)."
    )
    for view, _ in rows:
        labels = (("queue", view.queue), ("webhook", view.id))
        out.sample("broker_webhook_deliveries_total", view.deliveries, labels)
    out.family(
        "broker_webhook_failures_total",
        "counter",
        "Webhook requests that failed (status, timeout, refused): nacked.",
    )
    for view, _ in rows:
        labels = (("queue", view.queue), ("webhook", view.id))
        out.sample("broker_webhook_failures_total", view.failures, labels)
    out.family("broker_webhook_latency_seconds", "summary", "Webhook request latency.")
    for view, stats in rows:
        labels = (("queue", view.queue), ("webhook", view.id))
        out.sample("broker_webhook_latency_seconds_sum", stats.latency_s if stats else 0.0, labels)
        out.sample(
            "broker_webhook_latency_seconds_count", stats.latency_count if stats else 0, labels
        )
    out.family("broker_webhook_in_flight", "gauge", "Webhook requests under way.")
    for view, _ in rows:
        labels = (("queue", view.queue), ("webhook", view.id))
        out.sample("broker_webhook_in_flight", view.in_flight, labels)
    out.family(
        "broker_webhook_active", "gauge", "1 when the webhook delivers (not paused/disabled)."
    )
    for view, _ in rows:
        labels = (("queue", view.queue), ("webhook", view.id))
        out.sample("broker_webhook_active", 1 if view.state == "active" else 0, labels)

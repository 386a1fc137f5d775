"""``GET /stats``: the `StatsResponse` of DESIGN.md, built by `build_stats`.

Every number comes from counters kept anyway: message counts from the
actors' state (`Broker.totals`, `Broker.infos`), requests from the
middleware's `RequestCounters`, rates from the `RateSampler` ring, system
readings from the cached `SystemSampler`. Building one costs a pass over the
queues and no storage query, so a dashboard may poll it every 100 ms.

`build_stats` is the one entry point: REST serves it here and GraphQL's
``stats`` resolves to it.
"""

from __future__ import annotations

import time
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, cast

import msgspec
from litestar import Request, get

from broker_core.messages import from_timestamp
from broker_core.permissions import visible
from broker_core.service_tokens import STATS_READ, require_scope

from ..context import ctx_of
from ..errors import last_error
from ..security import user_of
from ..webhooks.observe import WebhookCounts, webhook_counts
from .rates import Rates
from .system import SystemStats
from .telemetry import telemetry_of

if TYPE_CHECKING:
    from broker_core.auth import User
    from broker_core.journal import SharedStorage

    from ..context import BrokerContext

__all__ = [
    "BrokerSpecific",
    "QueueCounts",
    "StatsResponse",
    "StorageStats",
    "build_stats",
    "format_uptime",
    "get_stats",
]


def _version_of(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


BROKER_VERSION = _version_of("wsbroker")
FRAMEWORK = "litestar"
FRAMEWORK_VERSION = _version_of("litestar")
AUTH_METHOD = "jwt-bearer"
"""Access tokens are HS256 JWTs sent as ``Authorization: Bearer`` (DESIGN.md, Auth)."""


class QueueCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Counts of one queue, from its actor's counters."""

    name: str
    pending: int
    processing: int
    processed: int
    failed: int
    delayed: int
    consumers: int
    published_total: int
    delivered_total: int
    acked_total: int
    nacked_total: int


class StorageStats(msgspec.Struct, frozen=True, kw_only=True):
    """The storage backend, its size and its group commits so far."""

    backend: str
    size_bytes: int
    degraded: str | None
    """Why writes fail now (publishes are refused), or None."""
    batches: int
    ops: int
    commit_seconds: float
    """Time spent in commits, summed over ``batches``."""
    failures: int
    last_error: str | None


class BrokerSpecific(msgspec.Struct, frozen=True, kw_only=True):
    """What this broker is and does: software, storage, auth, queues, rates."""

    framework: str
    framework_version: str
    version: str
    node: str | None
    """This node's name when several nodes share the storage (PostgreSQL), else None. The
    message counts are then every node's."""
    storage: StorageStats
    auth_method: str
    tls: bool
    consumers: int
    """Push consumers on the queues listed in ``queues``."""
    queues: list[QueueCounts]
    """The queues the caller has a permission on (all for an admin), by name."""
    rates: Rates
    webhooks: list[WebhookCounts] = []
    """The webhooks of the queues listed, with this node's counters."""


class StatsResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /stats`` (DESIGN.md, REST). Instants are ISO 8601 UTC.

    Request counts cover the responses sent before this one was built (it
    does not count itself). Message counts are over all queues.
    """

    start_time: datetime
    uptime_seconds: float
    uptime_human: str
    """``2d 3h 4m 5s``; leading zero units are left out (``4m 5s``)."""
    requests_total: int
    requests_by_route: dict[str, dict[str, int]]
    """Route template -> method -> count; ``<unmatched>`` for routing 404/405s, ``WS`` for
    WebSocket upgrades."""
    requests_by_status: dict[str, int]
    queues_total: int
    messages_total: int
    messages_pending: int
    messages_processing: int
    messages_processed: int
    messages_failed: int
    last_error: str | None
    last_error_timestamp: datetime | None
    system: SystemStats
    broker_specific: BrokerSpecific


def format_uptime(seconds: float) -> str:
    """``183845`` -> ``"2d 3h 4m 5s"``, leaving out leading zero units (``"5s"``)."""
    remaining = max(0, int(seconds))
    days, remaining = divmod(remaining, 86_400)
    hours, remaining = divmod(remaining, 3_600)
    minutes, secs = divmod(remaining, 60)
    parts: list[str] = []
    for value, unit in ((days, "d"), (hours, "h"), (minutes, "m")):
        if value or parts:
            parts.append(f"{value}{unit}")
    parts.append(f"{secs}s")
    return " ".join(parts)


def build_stats(ctx: BrokerContext, *, user: User | None = None) -> StatsResponse:
    """Build the `StatsResponse` of the broker behind ``ctx``.

    Cheap enough to call at 10/s (no storage query, psutil cached for a
    second). Call it on the event loop: it reads the actors' state.

    Args:
        ctx: the running broker.
        user: when given and not an admin, the queue and message figures
            cover only the queues this user has a permission on, as
            ``GET /queues`` does.
    """
    telemetry = telemetry_of(ctx)
    broker = ctx.broker
    storage = ctx.storage
    settings = ctx.settings
    now = time.time()

    requests = telemetry.requests
    by_route = {
        route: {method: series.count for method, series in methods.items()}
        for route, methods in requests.routes.items()
    }
    by_status = {str(status): count for status, count in sorted(requests.by_status.items())}

    names = broker.queue_names()
    # A `stats:read` service token is an operator's eyes: every queue, like an admin.
    if user is None or user.admin or STATS_READ in (user.scopes or ()):
        shown = names
    else:
        shown = [n for n in names if visible(user, n)]
    queues = [
        QueueCounts(
            name=info.name,
            pending=info.pending,
            processing=info.processing,
            processed=info.processed,
            failed=info.failed,
            delayed=info.delayed,
            consumers=info.consumers,
            published_total=info.published_total,
            delivered_total=info.delivered_total,
            acked_total=info.acked_total,
            nacked_total=info.nacked_total,
        )
        for info in broker.infos(shown)
    ]
    # A non-admin's figures cover the queues it may see: counts of the others
    # would tell it they exist, which GET /queues doesn't.
    totals = broker.totals(shown)
    batches = storage.batch_stats
    error_at = last_error.timestamp
    return StatsResponse(
        start_time=from_timestamp(ctx.started_at),
        uptime_seconds=round(now - ctx.started_at, 3),
        uptime_human=format_uptime(now - ctx.started_at),
        requests_total=requests.total,
        requests_by_route=by_route,
        requests_by_status=by_status,
        queues_total=len(shown),
        messages_total=totals["total"],
        messages_pending=totals["pending"],
        messages_processing=totals["processing"],
        messages_processed=totals["processed"],
        messages_failed=totals["failed"],
        last_error=last_error.message,
        last_error_timestamp=None if error_at is None else from_timestamp(error_at),
        system=telemetry.system.read(),
        broker_specific=BrokerSpecific(
            framework=FRAMEWORK,
            framework_version=FRAMEWORK_VERSION,
            version=BROKER_VERSION,
            node=cast("SharedStorage", storage).node_name if storage.shared else None,
            storage=StorageStats(
                backend=storage.name,
                size_bytes=storage.size_bytes(),
                degraded=storage.degraded,
                batches=batches.batches,
                ops=batches.ops,
                commit_seconds=batches.seconds,
                failures=batches.failures,
                last_error=batches.last_error,
            ),
            auth_method=AUTH_METHOD,
            tls=settings.tls,
            consumers=sum(q.consumers for q in queues),
            queues=queues,
            rates=telemetry.rates.rates(time.monotonic()),
            webhooks=webhook_counts(ctx.webhooks, shown),
        ),
    )


@get(
    "/stats",
    tags=["operations"],
    opt={"rate_limit": "admin"},
)
async def get_stats(request: Request[Any, Any, Any]) -> StatsResponse:
    """Uptime, request and message counts, system readings and broker details.

    Any user, or a service token with ``stats:read`` (which sees every queue).

    ``broker_specific.queues`` lists only the queues the caller has a
    permission on.
    """
    user = user_of(request)
    require_scope(user, STATS_READ)
    ctx = ctx_of(request)
    await ctx.broker.sync_counts()
    return build_stats(ctx, user=user)

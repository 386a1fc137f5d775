"""Observability: ``/stats``, ``/metrics``, ``/logs``, request ids and ``X-Process-Time``.

The composition root (`transports.app`) registers `ROUTES`, runs
`sampler_lifespan` and wraps the finished app with `instrument`, which puts
`RequestMetricsMiddleware` around everything (routing included). All state
lives in one `Telemetry` per `BrokerContext`; GraphQL's ``stats`` uses
`build_stats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .logs import LogController
from .metrics import get_metrics, render_metrics
from .middleware import RequestMetricsMiddleware, instrument
from .stats import StatsResponse, build_stats, get_stats
from .telemetry import Telemetry, sampler_lifespan, telemetry_of

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

__all__ = [
    "ROUTES",
    "RequestMetricsMiddleware",
    "StatsResponse",
    "Telemetry",
    "build_stats",
    "instrument",
    "render_metrics",
    "sampler_lifespan",
    "telemetry_of",
]

ROUTES: list[ControllerRouterHandler] = [get_stats, get_metrics, LogController]
"""The route handlers of ``/stats``, ``/metrics`` and ``/logs``."""

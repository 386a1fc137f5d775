"""How runs become figures: medians with their min-max, and latency percentiles."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["percentiles", "spread", "summarise"]


def spread(values: Iterable[float]) -> dict[str, Any]:
    """``{"median", "min", "max", "runs"}`` of some runs' values."""
    runs = [float(value) for value in values]
    if not runs:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(runs),
        "min": min(runs),
        "max": max(runs),
        "runs": runs,
    }


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p99, max and mean of latencies given in seconds, in milliseconds."""
    if not seconds:
        nan = float("nan")
        return {"p50_ms": nan, "p99_ms": nan, "max_ms": nan, "mean_ms": nan, "samples": 0}
    ms = sorted(value * 1000 for value in seconds)

    def at(fraction: float) -> float:
        return ms[min(len(ms) - 1, int(len(ms) * fraction))]

    return {
        "p50_ms": round(at(0.50), 3),
        "p99_ms": round(at(0.99), 3),
        "max_ms": round(ms[-1], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "samples": len(ms),
    }


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per numeric key of the runs' dicts, its `spread`; other keys from the first run."""
    if not runs:
        return {}
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        if isinstance(first, bool) or not isinstance(first, int | float):
            out[key] = first
        else:
            out[key] = spread(run[key] for run in runs if isinstance(run.get(key), int | float))
    return out

"""PNG charts of a suite document (matplotlib, Agg backend: no display needed).

* ``throughput.png``: end to end, publish only and drain only per system,
  and our figures beside their ceilings; bars are medians, whiskers min-max;
* ``latency.png``: publish-to-deliver and publish-to-confirm p50/p99/max;
* ``scaling.png``: end-to-end throughput against queues and consumers;
* ``memory.png``: the broker's RSS in the memory phases, against the targets;
* ``profile.png``: where the broker's CPU went, by package.

A chart whose phases did not run is not drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from .report import SYSTEMS

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes

__all__ = ["draw"]

_NAMES = {"wsbroker": "wsbroker", "rabbitmq": "RabbitMQ", "nats": "NATS JetStream"}
_COLORS = {"wsbroker": "#2a6fdb", "rabbitmq": "#f28c28", "nats": "#27a567", "ceiling": "#999999"}


def _spread(cell: Any) -> tuple[float, float, float] | None:
    if isinstance(cell, dict) and isinstance(cell.get("median"), int | float):
        return float(cell["median"]), float(cell["min"]), float(cell["max"])
    return None


def _bars(
    ax: Axes, groups: list[str], series: dict[str, list[Any]], colors: dict[str, str]
) -> None:
    """Grouped bars: one group per label, one bar per series, min-max whiskers."""
    width = 0.8 / max(1, len(series))
    for index, (name, cells) in enumerate(series.items()):
        xs, heights, low, high = [], [], [], []
        for group, cell in enumerate(cells):
            spread = _spread(cell)
            if spread is None:
                continue
            median, least, most = spread
            xs.append(group + (index - (len(series) - 1) / 2) * width)
            heights.append(median)
            low.append(median - least)
            high.append(most - median)
        if xs:
            ax.bar(xs, heights, width, label=name, color=colors.get(name), yerr=[low, high],
                   capsize=3)  # fmt: skip
    ax.set_xticks(range(len(groups)), groups)
    ax.grid(axis="y", alpha=0.3)


def _throughput(results: dict[str, Any], path: Path, subtitle: str) -> bool:
    phases = [phase for phase in ("e2e", "publish", "drain") if phase in results]
    if not phases:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), width_ratios=[3, 2])
    labels = {"e2e": "end to end", "publish": "publish only", "drain": "drain only"}
    series = {
        _NAMES[key]: [(results[phase] or {}).get(key, {}).get("msgs_per_s") for phase in phases]
        for key in SYSTEMS
    }
    colors = {_NAMES[key]: _COLORS[key] for key in SYSTEMS}
    _bars(left, [labels[phase] for phase in phases], series, colors)
    left.set_ylabel("messages / s (1 KiB, durable)")
    left.set_title("Throughput, same workload")
    left.legend()
    ceilings = results.get("ceilings", {})
    rest = results.get("rest", {})

    def ours(phase: str) -> Any:
        return (results.get(phase) or {}).get("wsbroker", {}).get("msgs_per_s")

    pairs = [
        ("WS end to end\nvs WS echo", ours("e2e"), ceilings.get("ws_echo", {}).get("msgs_per_s")),
        ("publish only\nvs SQLite inserts", ours("publish"),
         ceilings.get("sqlite_inserts", {}).get("msgs_per_s")),
        ("REST publish\nvs bare Litestar", (rest.get("wsbroker") or {}).get("requests_per_s"),
         (rest.get("bare_litestar") or {}).get("requests_per_s")),
    ]  # fmt: skip
    _bars(
        right,
        [label for label, _, _ in pairs],
        {"wsbroker": [ours for _, ours, _ in pairs], "ceiling": [top for _, _, top in pairs]},
        _COLORS,
    )
    right.set_yscale("log")
    right.set_ylabel("per second (log)")
    right.set_title("Our figures and their ceilings")
    right.legend()
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _latency(results: dict[str, Any], path: Path, subtitle: str) -> bool:
    latency = results.get("latency")
    if not latency:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, kind, title in zip(
        axes, ("deliver", "confirm"), ("publish to deliver", "publish to confirm"), strict=True
    ):
        series = {
            _NAMES[key]: [
                (latency.get(key) or {}).get(f"{kind}_{p}_ms") for p in ("p50", "p99", "max")
            ]
            for key in SYSTEMS
        }
        _bars(ax, ["p50", "p99", "max"], series, {_NAMES[k]: _COLORS[k] for k in SYSTEMS})
        ax.set_yscale("log")
        ax.set_title(f"{title}, fixed rate")
        ax.legend()
    axes[0].set_ylabel("milliseconds (log)")
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _scaling(results: dict[str, Any], path: Path, subtitle: str) -> bool:
    scaling = results.get("scaling")
    if not scaling:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, axis in zip(axes, ("queues", "consumers"), strict=True):
        points = scaling.get(axis, {})
        for key in SYSTEMS:
            xs, ys, low, high = [], [], [], []
            for n, point in points.items():
                spread = _spread((point.get(key) or {}).get("msgs_per_s"))
                if spread is not None:
                    xs.append(int(n))
                    ys.append(spread[0])
                    low.append(spread[0] - spread[1])
                    high.append(spread[2] - spread[0])
            if xs:
                ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3,
                            label=_NAMES[key], color=_COLORS[key])  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks([int(n) for n in points], [str(n) for n in points])
        ax.set_xlabel(axis)
        ax.set_title(f"End to end vs {axis}")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("messages / s")
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _memory(results: dict[str, Any], path: Path, subtitle: str) -> bool:
    memory, consumers = results.get("memory"), results.get("consumers")
    if not memory and not consumers:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    if memory:
        labels = ["idle", "pending\n(stored)", "peak while\npublishing", "after\nrestart"]
        values = [memory["rss_idle_mb"], memory["rss_pending_mb"], memory["rss_peak_mb"],
                  memory["restart"]["rss_mb"]]  # fmt: skip
        axes[0].bar(labels, values, color=_COLORS["wsbroker"])
        axes[0].axhline(256, color="red", linestyle="--", label="target 256 MB")
        axes[0].set_title(f"{memory['pending']:,} pending 1 KiB messages")
        axes[0].legend()
    if consumers:
        labels = ["idle", "connected", "peak", "after\ndelivery"]
        values = [consumers["rss_idle_mb"], consumers["rss_connected_mb"],
                  consumers["rss_peak_mb"], consumers["rss_after_mb"]]  # fmt: skip
        axes[1].bar(labels, values, color=_COLORS["wsbroker"])
        axes[1].axhline(1024, color="red", linestyle="--", label="target 1 GB")
        axes[1].set_title(f"{consumers['consumers']:,} WebSocket consumers")
        axes[1].legend()
    for ax in axes:
        ax.set_ylabel("broker RSS, MB")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _profile(results: dict[str, Any], path: Path, subtitle: str) -> bool:
    profile = {
        phase: summary
        for phase, summary in (results.get("profile") or {}).items()
        if isinstance(summary, dict) and "loop" in summary
    }
    if not profile:
        return False
    fig, axes = plt.subplots(1, len(profile), figsize=(6 * len(profile), 4.5), squeeze=False)
    for ax, (phase, summary) in zip(axes[0], profile.items(), strict=True):
        loop = summary["loop"]
        rows = loop["self_by_package"][:10][::-1]
        ax.barh([row["frame"] for row in rows], [row["percent"] for row in rows],
                color=_COLORS["wsbroker"])  # fmt: skip
        ax.set_xlabel("% of the event loop's busy samples (self time)")
        ax.set_title(f"{phase}: event loop busy {loop['busy_percent']}% of the time")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def draw(document: dict[str, Any], directory: Path) -> list[Path]:
    """Draw every chart the document has data for into ``directory``; return their paths."""
    results = document.get("results", {})
    load = document.get("load", {}).get("start", [])
    machine = document.get("machine", {})
    subtitle = (
        f"{document.get('when', '')}, {machine.get('cpus', '?')} CPUs shared by broker, clients "
        f"and peers, load average at start {load[0] if load else '?'}"
    )
    for rerun in document.get("reruns", []):
        phases, start = "+".join(rerun["phases"]), rerun["load"]["start"][0]
        subtitle += f"; {phases} rerun at {rerun['when']}, load {start}"
    drawn = []
    for name, chart in (
        ("throughput", _throughput),
        ("latency", _latency),
        ("scaling", _scaling),
        ("memory", _memory),
        ("profile", _profile),
    ):
        path = directory / f"{name}.png"
        if chart(results, path, subtitle):
            drawn.append(path)
    return drawn

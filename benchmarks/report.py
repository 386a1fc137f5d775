"""The suite's results as Markdown tables: figures side by side, targets, profiles.

Every cell is the median of the runs with their min-max in parentheses
(``12,900 (12,100-13,300)``); latencies show p50 / p99 / max medians. A
system that was skipped or failed shows ``-``; the JSON has the reason.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SYSTEMS",
    "median_of",
    "median_range",
    "number",
    "profile_tables",
    "table",
    "targets",
    "targets_table",
]

SYSTEMS = ("wsbroker", "rabbitmq", "nats")
_NAMES = {"wsbroker": "wsbroker", "rabbitmq": "RabbitMQ", "nats": "NATS JetStream"}


def median_of(cell: Any) -> float | None:
    """The median of a summarised cell (``{"median": ...}``) or the number itself; else None."""
    if isinstance(cell, dict):
        value = cell.get("median")
        return float(value) if isinstance(value, int | float) else None
    return float(cell) if isinstance(cell, int | float) else None


def number(value: float | None, digits: int = 0) -> str:
    """``value`` with thousands separators, ``-`` when missing or NaN."""
    if value is None or value != value:
        return "-"
    return f"{value:,.{digits}f}"


def median_range(summary: dict[str, Any] | None, key: str = "msgs_per_s", digits: int = 0) -> str:
    """``median (min-max)`` of ``key`` in a `stats.summarise` result (a throughput by default)."""
    if not summary or key not in summary:
        return "-"
    cell = summary[key]
    median = median_of(cell)
    if median is None:
        return "-"
    if isinstance(cell, dict) and len(cell.get("runs", [])) > 1:
        low, high = number(cell["min"], digits), number(cell["max"], digits)
        return f"{number(median, digits)} ({low}-{high})"
    return number(median, digits)


def _latency(summary: dict[str, Any] | None, kind: str) -> str:
    if not summary:
        return "-"
    values = [median_of(summary.get(f"{kind}_{p}_ms")) for p in ("p50", "p99", "max")]
    return " / ".join(number(value, 2) for value in values)


def _cpu(summary: dict[str, Any] | None) -> str:
    """Server CPU per message, with the clients' in parentheses (medians, microseconds)."""
    if not summary:
        return "-"
    server = median_of(summary.get("server_cpu_us"))
    client = median_of(summary.get("client_cpu_us"))
    return f"{number(server)} (clients {number(client)})"


def _row(label: str, cells: list[str], ceiling: str = "") -> str:
    return "| " + " | ".join([label, *cells, ceiling]) + " |"


def table(document: dict[str, Any]) -> str:
    """The main table: one row per figure, one column per system, then the ceiling."""
    results = document.get("results", {})
    plan = document.get("plan", {})
    lines = [
        _row("", [_NAMES[key] for key in SYSTEMS], "our ceiling"),
        "|---|" + "---:|" * len(SYSTEMS) + "---|",
    ]

    def per_system(phase: dict[str, Any] | None, render: Any) -> list[str]:
        phase = phase or {}
        return [render(phase.get(key)) for key in SYSTEMS]

    ceilings = results.get("ceilings", {})
    echo = median_range(ceilings.get("ws_echo"))
    sqlite = median_range(ceilings.get("sqlite_inserts"))
    if "e2e" in results:
        cells = per_system(results["e2e"], median_range)
        lines.append(_row("End to end (publish, confirm, deliver, ack), msg/s", cells,
                          f"WebSocket echo: {echo}"))  # fmt: skip
        lines.append(_row("End to end: server CPU per message, µs (clients' CPU)",
                          per_system(results["e2e"], _cpu)))  # fmt: skip
    if "publish" in results:
        cells = per_system(results["publish"], median_range)
        lines.append(_row("Publish only, confirmed, msg/s", cells, f"SQLite inserts: {sqlite}"))
    if "drain" in results:
        lines.append(_row("Drain only (consume + ack a backlog), msg/s",
                          per_system(results["drain"], median_range)))  # fmt: skip
    if "latency" in results:
        rate = number(plan.get("rate"))
        for kind, what in (("deliver", "publish to deliver"), ("confirm", "publish to confirm")):
            cells = per_system(results["latency"], lambda s, kind=kind: _latency(s, kind))
            lines.append(_row(f"Latency at {rate} msg/s, {what}: p50 / p99 / max, ms", cells))

        def load(summary: dict[str, Any] | None) -> str:
            server = median_of((summary or {}).get("server_cpu_us"))
            return "-" if server is None else f"{server * plan.get('rate', 0) / 1e4:.0f}%"

        cells = per_system(results["latency"], load)
        lines.append(_row(f"Server CPU at {rate} msg/s, % of one core", cells))
    rest = results.get("rest")
    if rest:
        bare = median_range(rest.get("bare_litestar"), "requests_per_s")
        connections = plan.get("rest_connections", "")
        lines.append(
            _row(
                f"REST publish, {connections} keep-alive connections, req/s",
                [median_range(rest.get("wsbroker"), "requests_per_s"), "n/a", "n/a"],
                f"bare Litestar: {bare}",
            )
        )
    scaling = results.get("scaling", {})
    for axis, unit in (("queues", "queue"), ("consumers", "consumer")):
        for n, point in scaling.get(axis, {}).items():
            label = f"Scaling: {n} {unit if n == '1' else axis}, end to end msg/s"
            lines.append(_row(label, per_system(point, median_range)))
    memory = results.get("memory")
    if memory:
        restart = memory.get("restart", {})
        lines.append(_row(
            f"{memory['pending']:,} pending 1 KiB messages: broker RSS, MB",
            [f"{number(memory['rss_pending_mb'])} (peak {number(memory['rss_peak_mb'])})", "", ""],
        ))  # fmt: skip
        lines.append(_row(
            "Restart with them until a consume returns one, s",
            [f"{number(restart.get('ready_s'), 1)} (health {number(restart.get('health_s'), 1)})",
             "", ""],
        ))  # fmt: skip
    consumers = results.get("consumers")
    if consumers:
        delivered = f"{consumers['distinct']:,}/{consumers['published']:,} delivered"
        lines.append(_row(
            f"{consumers['consumers']:,} WebSocket consumers: broker RSS peak, MB",
            [f"{number(consumers['rss_peak_mb'])}, {delivered}", "", ""],
        ))  # fmt: skip
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def targets(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #8's targets, each with what was measured and whether it was met (None: not run)."""
    results = document.get("results", {})
    e2e = results.get("e2e", {})
    ours = median_of((e2e.get("wsbroker") or {}).get("msgs_per_s"))
    nats = median_of((e2e.get("nats") or {}).get("msgs_per_s"))
    rabbit = median_of((e2e.get("rabbitmq") or {}).get("msgs_per_s"))
    rows: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        rows.append({"target": target, "measured": measured, "met": met})

    ratio = _ratio(ours, nats)
    add(
        "End-to-end durable throughput over WebSocket >= NATS JetStream's",
        f"{number(ours)} vs {number(nats)} msg/s ({number(ratio, 2)}x)",
        None if ratio is None else ratio >= 1.0,
    )
    ratio = _ratio(ours, rabbit)
    add(
        "End-to-end durable throughput over WebSocket >= 5x RabbitMQ's",
        f"{number(ours)} vs {number(rabbit)} msg/s ({number(ratio, 2)}x)",
        None if ratio is None else ratio >= 5.0,
    )
    latency = results.get("latency", {})
    ours_p99 = median_of((latency.get("wsbroker") or {}).get("deliver_p99_ms"))
    rabbit_p99 = median_of((latency.get("rabbitmq") or {}).get("deliver_p99_ms"))
    add(
        "p99 publish-to-deliver at 1,000 msg/s <= RabbitMQ's",
        f"{number(ours_p99, 2)} vs {number(rabbit_p99, 2)} ms",
        None if ours_p99 is None or rabbit_p99 is None else ours_p99 <= rabbit_p99,
    )
    rest = results.get("rest", {})
    ours_rest = median_of((rest.get("wsbroker") or {}).get("requests_per_s"))
    bare = median_of((rest.get("bare_litestar") or {}).get("requests_per_s"))
    ratio = _ratio(ours_rest, bare)
    add(
        "REST publish >= 70% of the bare Litestar endpoint",
        f"{number(ours_rest)} vs {number(bare)} req/s "
        f"({number(None if ratio is None else 100 * ratio)}%)",
        None if ratio is None else ratio >= 0.7,
    )
    memory = results.get("memory")
    if memory:
        # A --quick run has fewer messages: its figures are shown, not judged.
        full = memory["pending"] >= 1_000_000
        scale = "" if full else f" (quick run: {memory['pending']:,} pending)"
        add(
            "1,000,000 pending: RSS < 256 MB",
            f"{number(memory['rss_pending_mb'])} MB (peak while publishing "
            f"{number(memory['rss_peak_mb'])} MB){scale}",
            memory["rss_pending_mb"] < 256 if full else None,
        )
        ready = memory.get("restart", {}).get("ready_s")
        add(
            "1,000,000 pending: ready after restart < 10 s",
            f"{number(ready, 1)} s (after kill -9: "
            f"{number(memory.get('restart_after_kill', {}).get('ready_s'), 1)} s){scale}",
            None if ready is None or not full else ready < 10,
        )
    else:
        add("1,000,000 pending: RSS < 256 MB", "not run", None)
        add("1,000,000 pending: ready after restart < 10 s", "not run", None)
    consumers = results.get("consumers")
    if consumers:
        full = consumers["consumers"] >= 5000
        scale = "" if full else f" (quick run: {consumers['consumers']:,} consumers)"
        add(
            "5,000 WebSocket consumers: RSS < 1 GB, every message delivered",
            f"peak {number(consumers['rss_peak_mb'])} MB; {consumers['distinct']:,} of "
            f"{consumers['published']:,} delivered{scale}",
            consumers["rss_peak_mb"] < 1024 and bool(consumers["every_message_delivered"])
            if full
            else None,
        )
    else:
        add("5,000 WebSocket consumers: RSS < 1 GB, every message delivered", "not run", None)
    return rows


def targets_table(rows: list[dict[str, Any]]) -> str:
    """The targets as a Markdown table."""
    verdict = {True: "met", False: "**missed**", None: "not measured"}
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {row['target']} | {row['measured']} | {verdict[row['met']]} |" for row in rows]
    return "\n".join(lines)


def profile_tables(profile: dict[str, Any], rows: int = 10) -> str:
    """Per profiled phase: the event loop's top self frames and our top inclusive frames."""
    out: list[str] = []
    for phase, summary in profile.items():
        if not isinstance(summary, dict) or "loop" not in summary:
            continue
        loop, sqlite = summary["loop"], summary.get("sqlite", {})
        out.append(
            f"\n**{phase}** ({summary['seconds']} s of traffic): event loop busy "
            f"{loop['busy_percent']}% of the time, {loop['self_ours_percent']}% of it in our "
            f"code; SQLite thread busy {sqlite.get('busy_percent', 0)}%"
        )
        packages = ", ".join(
            f"{row['frame']} {row['percent']}%" for row in loop["self_by_package"][:9]
        )
        out.append(f"\nevent loop self time by package: {packages}\n")
        out.append("| self % | event-loop function | inclusive % | our function |")
        out.append("|---:|---|---:|---|")
        selfs, ours = loop["self"][:rows], loop["inclusive_ours"][:rows]
        for index in range(max(len(selfs), len(ours))):
            cells: list[str] = []
            for rows_ in (selfs, ours):
                row = rows_[index] if index < len(rows_) else None
                cells += [str(row["percent"]), f"`{row['frame']}`"] if row else ["", ""]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)

"""History: the end-to-end cost of recording every message's history, and its size on disk.

Run: ``python -m benchmarks.history [--count N] [--runs R]``.

Two brokers run side by side, one with ``BROKER_HISTORY=true`` (the default)
and one with ``false``; the suite's ``flow`` (one WebSocket producer with
confirms, one consumer acking, 1 KiB messages) runs on each in turn,
interleaved run by run, medians of ``--runs``. Then the history table of
the recording broker is measured: events per message and bytes per
message (the ``history`` column of its row: one short line per event,
`broker_core.history_codec`), with one message's history as an example.

Caveats: every process shares this machine's cores, and others may be
using them: compare the figures of one run only.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
from typing import Any

from .harness import save
from .ours import Ours
from .phases import flow, queue_names
from .workload import Plan

__all__ = ["main"]


def throughput(on: Ours, off: Ours, count: int, runs: int) -> dict[str, Any]:
    """End-to-end msg/s with history on and off, interleaved."""
    plan = Plan(count=count, runs=runs, window=500, prefetch=500, rate=1000.0, duration=1.0)
    figures: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    for run in range(runs):
        order = (("on", on), ("off", off)) if run % 2 == 0 else (("off", off), ("on", on))
        for key, system in order:
            result = flow(system, plan, queue_names(f"history-{key}", run))
            figures[key].append(result["msgs_per_s"])
            cpu[key].append(result.get("server_cpu_us", 0.0))
            print(
                f"  run {run + 1} {key:<4} {result['msgs_per_s']:>10,.0f} msg/s, "
                f"server {cpu[key][-1]:,.1f} CPU us/msg",
                flush=True,
            )
    return {
        key: {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "server_cpu_us_median": statistics.median(cpu[key]),
        }
        for key, values in figures.items()
    } | {"runs": figures, "server_cpu_us": cpu}


def on_disk(ours: Ours, count: int = 1000) -> dict[str, Any]:
    """Events and bytes per message in the recording broker's history table.

    ``count`` messages of 1 KiB are published, leased and acked over REST on
    a queue that is kept (the runs' queues are deleted, their histories with
    them): each has the typical story ``published``, ``delivered``, ``acked``.
    """
    http = ours.http
    http.post("/queues", json={"name": "history-disk"}).raise_for_status()
    body = {"messages": [{"content": "x" * 1024} for _ in range(100)]}
    for _ in range(count // 100):
        http.post("/queues/history-disk/messages/batch", json=body).raise_for_status()
    acked = 0
    while acked < count:
        response = http.get("/queues/history-disk/messages/consume", params={"max": 100})
        ids = [m["message_id"] for m in response.json()["messages"]]
        http.post("/messages/ack", json={"ids": ids}).raise_for_status()
        acked += len(ids)
    ours.broker.stop()
    db = sqlite3.connect(ours.broker.data_dir / "broker.db")
    try:
        messages, events, stored = db.execute(
            "SELECT count(*), sum(length(history) - length(replace(history, char(10), ''))),"
            " sum(length(history)) FROM messages WHERE queue = 'history-disk'"
        ).fetchone()
        (example,) = db.execute(
            "SELECT history FROM messages WHERE queue = 'history-disk' LIMIT 1"
        ).fetchone()
    finally:
        db.close()
    return {
        "messages": messages,
        "events": events,
        "events_per_message": events / messages if messages else 0,
        "bytes_per_message": stored / messages if messages else 0,
        "example": example,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.history", description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="messages per e2e run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    print("end to end, history on vs off (WebSocket, 1 KiB, medians)")
    with Ours(BROKER_HISTORY="true") as on, Ours(BROKER_HISTORY="false") as off:
        results["throughput"] = throughput(on, off, args.count, args.runs)
        results["disk"] = on_disk(on)
    first, second = results["throughput"]["on"], results["throughput"]["off"]
    print(f"  median: on {first['median']:,.0f}, off {second['median']:,.0f} msg/s "
          f"({first['median'] / second['median'] - 1:+.1%})")  # fmt: skip
    cpu_on, cpu_off = first["server_cpu_us_median"], second["server_cpu_us_median"]
    print(f"  server CPU per message: on {cpu_on:,.1f} us, off {cpu_off:,.1f} us "
          f"({cpu_on / cpu_off - 1:+.1%})")  # fmt: skip
    print(f"  disk: {results['disk']}")
    print(f"\nsaved {save('history', results)}")


if __name__ == "__main__":
    main()

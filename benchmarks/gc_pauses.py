"""The garbage collector's pauses while a backlog grows under REST publishes.

Run: ``python -m benchmarks.gc_pauses [--seconds 10] [--runs 2]`` (needs ``wrk``).

The broker runs as `benchmarks.bench_http` runs it; each run publishes
with wrk (64 keep-alive connections) into one queue that nobody consumes,
so the backlog grows with every run, and reads the collector's counters
from ``/metrics`` (`transports.observability.collector`) before and after.
It prints and saves, per run: requests/s, p50 and p99 latency, full passes
(generation 2), the time all passes stopped the broker, and the longest
pass. Before entries were untracked and startup objects frozen, each full
pass walked the whole heap: 30-90 ms, about two a second, and a REST p99
of 80-94 ms (the README's performance section has both figures).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from .bench_http import have_wrk, wrk
from .harness import BrokerProcess, positive_int, save

__all__ = ["main"]

_SAMPLE = re.compile(r'^((?:python|broker)_gc_\w+?)(?:\{generation="(\d)"\})? (\S+)$', re.M)


def _collector(broker: BrokerProcess) -> dict[str, float]:
    with broker.http() as http:
        text = http.get("/metrics").text
    return {
        f"{name}:{generation}" if generation else name: float(value)
        for name, generation, value in _SAMPLE.findall(text)
    }


def _run(broker: BrokerProcess, seconds: int) -> dict[str, Any]:
    before = _collector(broker)
    result = wrk(f"{broker.url}/queues/backlog/messages", 64, seconds, broker.token())
    after = _collector(broker)
    with broker.http() as http:
        pending = http.get("/queues/backlog").json()["pending"]
    return {
        **result,
        "pending_after": pending,
        "full_passes": after["python_gc_collections_total:2"]
        - before["python_gc_collections_total:2"],
        "pause_ms": 1000
        * sum(
            after[f"broker_gc_pause_seconds_total:{g}"]
            - before[f"broker_gc_pause_seconds_total:{g}"]
            for g in range(3)
        ),
        "longest_pause_ms": 1000 * after["broker_gc_longest_pause_seconds"],
        "frozen_objects": after["broker_gc_frozen_objects"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gc_pauses", description=__doc__)
    parser.add_argument("--seconds", type=positive_int, default=10, help="seconds of each wrk run")
    parser.add_argument(
        "--runs", type=positive_int, default=2, help="runs (the backlog keeps growing)"
    )
    args = parser.parse_args(argv)
    if not have_wrk():
        parser.exit(1, "gc_pauses needs wrk (apt-get install wrk)\n")
    with BrokerProcess() as broker:
        with broker.http() as http:
            http.post("/queues", json={"name": "backlog"}).raise_for_status()
        runs = [_run(broker, args.seconds) for _ in range(args.runs)]
    print(f"\nREST publish into a growing backlog, {args.seconds} s per run, 64 connections")
    print("  req/s    p50 ms   p99 ms   backlog   full passes   paused ms   longest ms")
    for run in runs:
        print(
            f"  {run['requests_per_s']:>6,.0f}   {run['p50_ms']:>6.2f}   {run['p99_ms']:>6.2f}"
            f"   {run['pending_after']:>7,}   {run['full_passes']:>11.0f}"
            f"   {run['pause_ms']:>9.1f}   {run['longest_pause_ms']:>10.1f}"
        )
    print(f"  objects frozen at startup: {runs[-1]['frozen_objects']:,.0f}")
    print(f"\nsaved {save('gc_pauses', {'seconds': args.seconds, 'runs': runs})}")


if __name__ == "__main__":
    main()

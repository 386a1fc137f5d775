"""WebSocket end to end: publish -> push -> ack throughput, and publish-to-deliver latency.

Run: ``python -m benchmarks.bench_ws [--count N] [--rate R] [--duration S]``.

Our broker alone, one run of each: the suite's ``e2e`` and ``latency``
phases (`benchmarks.phases`, with the client roles of `benchmarks.ours`).
Three processes on 127.0.0.1: the broker (``python -m transports serve``,
TLS off, a fresh data dir, durable defaults), one producer and one
consumer, both using the client library on uvloop; messages are 1 KiB.
``python -m benchmarks.suite --only e2e latency`` does the same with
medians of three runs and the peers beside it.

Caveats: the three processes share this machine's cores (a 2-core machine
measures a floor, not a ceiling); the broker commits every batch to SQLite
before confirming, so the disk is part of the figures.
"""

from __future__ import annotations

import argparse

from .harness import save
from .ours import Ours
from .phases import flow, latency, queue_names
from .workload import Plan

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ws", description=__doc__)
    parser.add_argument("--count", type=int, default=50_000, help="throughput messages")
    parser.add_argument("--window", type=int, default=500, help="publishes in flight")
    parser.add_argument("--prefetch", type=int, default=500, help="consumer prefetch")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase msg/s")
    parser.add_argument("--duration", type=float, default=10.0, help="latency phase seconds")
    args = parser.parse_args(argv)
    if min(args.count, args.window, args.prefetch, args.rate, args.duration) <= 0:
        parser.error("every option must be positive")
    plan = Plan(
        count=args.count,
        runs=1,
        window=args.window,
        prefetch=args.prefetch,
        rate=args.rate,
        duration=args.duration,
    )
    with Ours() as ours:
        throughput = flow(ours, plan, queue_names("e2e", 0))
        latencies = latency(ours, plan, queue_names("latency", 0)[0])
    results = {"plan": {"count": args.count, "window": args.window, "prefetch": args.prefetch},
               "throughput": throughput, "latency": latencies}  # fmt: skip
    print(f"\nWebSocket end to end ({args.count:,} messages of 1 KiB, window {args.window}, "
          f"prefetch {args.prefetch})")  # fmt: skip
    print(f"  publish, confirmed (msg/s)         {throughput['publish_msgs_per_s']:>10,.0f}")
    print(f"  publish -> push -> ack (msg/s)     {throughput['msgs_per_s']:>10,.0f}")
    for kind in ("deliver", "confirm"):
        values = " / ".join(f"{latencies[f'{kind}_{p}_ms']:.2f}" for p in ("p50", "p99", "max"))
        print(f"  {kind} at {args.rate:g} msg/s p50/p99/max (ms)  {values}")
    print(f"\nsaved {save('bench_ws', results)}")


if __name__ == "__main__":
    main()

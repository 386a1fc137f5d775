"""Where a PostgreSQL cluster node's CPU goes: py-spy on node 1 during an end-to-end run.

Run: ``python -m benchmarks.pg_profile [--nodes 1] [--messages 20000]
[--out benchmarks/results/pg_profile.json]`` (PostgreSQL as for
`benchmarks.cluster`). One throughput phase of `benchmarks.cluster` on a
fresh throwaway database with ``py-spy record`` attached to node 1
(`benchmarks.profiling`); prints the event loop's busy share, its top self
frames and its self time by package, and saves them (the speedscope file
beside the JSON).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from .cluster import CLUSTER_PLAN, CONFIGS, Cluster, Scratch, throughput
from .harness import RESULTS, save
from .phases import queue_names
from .profiling import recording, summarise

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pg_profile", description=__doc__)
    parser.add_argument("--nodes", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--messages", type=int, default=CLUSTER_PLAN.count)
    parser.add_argument("--out", type=Path, default=RESULTS / "pg_profile.json")
    args = parser.parse_args(argv)
    plan = msgspec.structs.replace(CLUSTER_PLAN, count=args.messages)
    config = next(c for c in CONFIGS if c.postgres and c.nodes == args.nodes)
    scratch = Scratch()
    scratch.fresh()
    try:
        with Cluster(config, scratch.url) as cluster:
            cluster.token()
            warm = msgspec.structs.replace(plan, count=2000)
            throughput(cluster, warm, queue_names("profile-warm", 0)[0])
            speedscope = args.out.with_suffix(".speedscope.json")
            with recording(cluster.nodes[0].pid, speedscope) as record:
                result = throughput(cluster, plan, queue_names("profile", 0)[0])
    finally:
        scratch.drop()
    summary = summarise(record, result["seconds"])
    loop = summary.get("loop", {})
    print(
        f"{result['msgs_per_s']:,.0f} msg/s; broker {result['broker_cpu_us_per_msg']} µs/msg, "
        f"postgres {result['postgres_cpu_us_per_msg']} µs/msg; event loop busy "
        f"{loop.get('busy_percent')}%"
    )
    for title, key in (("self", "self"), ("self by package", "self_by_package")):
        print(f"\n{title}:")
        for row in loop.get(key, [])[:12]:
            print(f"  {row}")
    path = save(args.out.stem, {"throughput": result, "profile": summary}, args.out.parent)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A scaling model of cluster mode, checked with processes pinned to cores.

Run: ``python -m benchmarks.pg_scaling [--messages N] [--runs R]
[--out benchmarks/results/pg_scaling.json]`` (PostgreSQL on 127.0.0.1:5432 with
trust auth, as `benchmarks.cluster`; pinning another user's PostgreSQL
backends needs root or ``CAP_SYS_NICE``).

**The model.** Every message costs each process that handles it some CPU:
``b`` µs in the broker node that serves it (publish, claim, delivery, ack),
``p`` µs in PostgreSQL (its backends and WAL writer), ``c`` µs in the clients.
Messages are spread over the nodes (one queue, a producer and a consumer per
node, as in `benchmarks.cluster`), so a node's work is ``b`` per message it
serves. A core runs at most one CPU second per second, so the throughput
is bounded by the busiest core::

    msg/s = min over cores k of  1e6 / (sum of the µs per message of what runs on k)

For N nodes on cores of their own, PostgreSQL with M cores and clients
elsewhere this is ``min(N * 1e6 / b, M * 1e6 / p)``: nodes add throughput
until PostgreSQL's cores are full (the model ignores lock waits on one
queue's rows and the WAL's one flush at a time, which only lower it).

**The check.** One unpinned run measures ``b``, ``p`` and ``c`` (medians);
then each layout below pins the node processes, the run's PostgreSQL
backends (those of its throwaway database, after a warm-up opened them) and
the client processes (this process's affinity, which they inherit) to cores,
predicts its throughput from ``b``, ``p`` and ``c``, and measures it:

* ``one core``: everything on core 0;
* ``node | pg+clients``: one node on core 0, PostgreSQL and the clients on core 1;
* ``2 nodes | pg+clients``: two nodes on core 0, PostgreSQL and the clients on core 1.

On a machine shared with other work the measured figure is below the
prediction by what the others take of those cores; the run records the
machine's load average beside each layout, and the share of its busiest
core each run got (`core_share`: its throughput times its own µs per
message on that core): the model holds when measured / predicted follows
that share.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from .cluster import CLUSTER_PLAN, CONFIGS, Cluster, Scratch, _postgres_cpu, throughput
from .harness import RESULTS, load_average, save, say
from .phases import queue_names

__all__ = ["LAYOUTS", "core_share", "main", "predict"]

LAYOUTS: dict[str, dict[str, Any]] = {
    "one core": {"nodes": 1, "node_cores": [{0}], "pg": {0}, "clients": {0}},
    "node | pg+clients": {"nodes": 1, "node_cores": [{0}], "pg": {1}, "clients": {1}},
    "2 nodes | pg+clients": {"nodes": 2, "node_cores": [{0}, {0}], "pg": {1}, "clients": {1}},
}
"""Where each layout puts the node processes, PostgreSQL's backends and the clients."""


def predict(layout: dict[str, Any], node_us: float, pg_us: float, client_us: float) -> float:
    """Messages per second the model predicts for ``layout`` (µs per message as measured).

    ``node_us`` is one message's broker CPU; with several nodes each serves
    its share of the messages.
    """
    load: dict[int, float] = {}
    nodes = layout["nodes"]
    for cores in layout["node_cores"]:
        for core in cores:
            load[core] = load.get(core, 0.0) + node_us / nodes / len(cores)
    for cores, cost in ((layout["pg"], pg_us), (layout["clients"], client_us)):
        for core in cores:
            load[core] = load.get(core, 0.0) + cost / len(cores)
    return min(1e6 / us for us in load.values())


def core_share(layout: dict[str, Any], result: dict[str, Any]) -> float:
    """The share of its busiest core a pinned run got: what it used there per wall second.

    The run's own per-message costs times its throughput: 1.0 means the
    core was all the run's (the model's assumption), less means other work
    on the machine took the rest.
    """
    predicted = predict(
        layout,
        result["broker_cpu_us_per_msg"],
        result["postgres_cpu_us_per_msg"],
        result["clients_cpu_us_per_msg"],
    )
    return float(result["msgs_per_s"]) / predicted


def _pin_postgres(database: str, cores: set[int]) -> int:
    """Pin the backends of ``database`` to ``cores``; return how many."""
    pids = list(_postgres_cpu(database))
    for pid in pids:
        os.sched_setaffinity(pid, cores)
    return len(pids)


def _run(scratch: Scratch, layout: dict[str, Any] | None, plan: Any, run: int) -> dict[str, Any]:
    nodes = layout["nodes"] if layout else 1
    config = next(c for c in CONFIGS if c.postgres and c.nodes == nodes)
    everything = os.sched_getaffinity(0)
    scratch.fresh()
    try:
        with Cluster(config, scratch.url) as cluster:
            cluster.token()
            warm = msgspec.structs.replace(plan, count=max(1000, plan.count // 10))
            throughput(cluster, warm, queue_names("scale-warm", run)[0])
            pinned = 0
            if layout is not None:
                for node, cores in zip(cluster.nodes, layout["node_cores"], strict=True):
                    os.sched_setaffinity(node.pid, cores)
                pinned = _pin_postgres(scratch.name, layout["pg"])
                os.sched_setaffinity(0, layout["clients"])
            try:
                result = throughput(cluster, plan, queue_names("scale", run)[0])
            finally:
                os.sched_setaffinity(0, everything)
            result["postgres_backends_pinned"] = pinned
            result["load_average"] = load_average()
            return result
    finally:
        os.sched_setaffinity(0, everything)


def _median(results: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pg_scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=CLUSTER_PLAN.count)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "pg_scaling.json"))
    args = parser.parse_args(argv)
    plan = msgspec.structs.replace(CLUSTER_PLAN, count=args.messages)
    scratch = Scratch()
    runs: dict[str, list[dict[str, Any]]] = {"unpinned": [], **{name: [] for name in LAYOUTS}}
    try:
        for run in range(args.runs):
            # Interleaved: each run measures the costs and every layout once.
            for name in runs:
                layout = LAYOUTS.get(name)
                say(f"== run {run + 1}/{args.runs}: {name} (load average {load_average()})")
                result = _run(scratch, layout, plan, run)
                runs[name].append(result)
                say(
                    f"   {result['msgs_per_s']:,.0f} msg/s; µs per message: broker "
                    f"{result['broker_cpu_us_per_msg']}, postgres "
                    f"{result['postgres_cpu_us_per_msg']}, clients "
                    f"{result['clients_cpu_us_per_msg']}"
                )
    finally:
        scratch.drop()
    costs = {
        key: _median(runs["unpinned"], f"{key}_cpu_us_per_msg")
        for key in ("broker", "postgres", "clients")
    }
    table = []
    for name, layout in LAYOUTS.items():
        measured = [r["msgs_per_s"] for r in runs[name]]
        predicted = predict(layout, costs["broker"], costs["postgres"], costs["clients"])
        table.append(
            {
                "layout": name,
                "predicted_msgs_per_s": round(predicted),
                "measured_msgs_per_s": round(statistics.median(measured)),
                "min": round(min(measured)),
                "max": round(max(measured)),
                "measured_over_predicted": round(statistics.median(measured) / predicted, 2),
                "busiest_core_share": round(
                    statistics.median(core_share(layout, r) for r in runs[name]), 2
                ),
            }
        )
    document = {
        "plan": {"count": plan.count, "runs": args.runs, "window": plan.window},
        "costs_us_per_msg": costs,
        "unpinned_msgs_per_s": _median(runs["unpinned"], "msgs_per_s"),
        "layouts": table,
        "runs": runs,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    path = save(out.stem, document, out.parent)
    print(f"\ncosts, µs per message (median of {args.runs} unpinned runs): {costs}")
    print(
        "| layout | predicted msg/s | measured msg/s, median (min-max) | measured / predicted "
        "| share of the busiest core the run got |"
    )
    print("|---|---:|---:|---:|---:|")
    for row in table:
        print(
            f"| {row['layout']} | {row['predicted_msgs_per_s']:,} | "
            f"{row['measured_msgs_per_s']:,} ({row['min']:,}-{row['max']:,}) | "
            f"{row['measured_over_predicted']} | {row['busiest_core_share']} |"
        )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

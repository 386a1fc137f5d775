"""Message groups, in process: `QueueState` publish + pull + ack throughput and fairness.

NOT end to end (no server, no storage): it measures the cost of the group
ring against ungrouped messages in the same run, interleaved, and the
fairness figure (deliveries before the first message of a small group that
was published behind a large one).

    python -m benchmarks.groups --count 50000 --runs 3 --out benchmarks/results/groups.json

``--memory N --groups G``: instead, a real broker gets N pending 1 KiB
messages in G groups over REST (`memory.pending`): RSS, and restart to the
first delivery (clean and after kill -9).

    python -m benchmarks.groups --memory 1000000 --groups 100000 \
        --out benchmarks/results/groups_memory.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import msgspec

from broker_core.messages import PublishRequest, QueueOptions
from broker_core.pending import BodyBudget
from broker_core.queue import QueueState


def run(count: int, groups: int | None) -> float:
    """Messages per second through publish, pull (batches of 100) and ack."""
    state = QueueState("q", QueueOptions(), budget=BodyBudget(1 << 30))
    ids = itertools.count(1)
    body = msgspec.Raw(b'{"n":1}')
    names = [f"g{n}" for n in range(groups or 1)]
    requests = [
        PublishRequest(content=body, group=None if groups is None else names[n % len(names)])
        for n in range(count)
    ]
    started = time.perf_counter()
    now = 1000.0
    for start in range(0, count, 100):
        state.publish(requests[start : start + 100], now, lambda: next(ids))
    done = 0
    while done < count:
        got = state.pull(100, None, now)
        state.ack([e.id for e in got], now)
        state.take_ops()
        done += len(got)
    return count / (time.perf_counter() - started)


def fairness(large: int = 100_000, small: int = 5) -> int:
    """Deliveries before the first message of a small group published behind a large one."""
    state = QueueState("q", QueueOptions(), budget=BodyBudget(1 << 30))
    ids = itertools.count(1)
    body = msgspec.Raw(b"1")
    big = [PublishRequest(content=body, group="big") for _ in range(large)]
    state.publish(big, 0.0, lambda: next(ids))
    state.publish([PublishRequest(content=body, group="small")] * small, 0.0, lambda: next(ids))
    for delivered in itertools.count():
        [entry] = state.pull(1, None, 0.0)
        if entry.group == "small":
            return delivered
        state.ack([entry.id], 0.0)
    raise AssertionError("unreachable")


def main() -> None:
    """Run the cases interleaved ``--runs`` times; print and save medians and min-max."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/groups.json")
    parser.add_argument("--memory", type=int, default=0)
    parser.add_argument("--groups", type=int, default=100_000)
    args = parser.parse_args()
    if args.memory:
        from .memory import pending
        from .workload import Plan

        figures = pending(Plan(pending=args.memory), groups=args.groups)
        figures["note"] = "shared 2-core machine"
        print(json.dumps(figures, indent=2))
        Path(args.out).write_text(json.dumps(figures, indent=2))
        return
    cases: dict[str, int | None] = {"ungrouped": None, "1": 1, "100": 100, "10000": 10_000}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, groups in cases.items():
            rates[name].append(run(args.count, groups))
    base = statistics.median(rates["ungrouped"])
    result = {
        "count": args.count,
        "runs": args.runs,
        "msg_per_s": {
            name: {"median": statistics.median(r), "min": min(r), "max": max(r)}
            for name, r in rates.items()
        },
        "vs_ungrouped": {name: statistics.median(r) / base for name, r in rates.items()},
        "fairness_deliveries_before_small_group": fairness(),
        "note": "in process (QueueState only), shared 2-core machine",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

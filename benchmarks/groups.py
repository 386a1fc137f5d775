"""Message groups: publish + consume + ack throughput against ungrouped, and fairness.

By default in process (no server, no storage); ``--end-to-end`` runs a real
broker (REST publish, 8 REST consumers). Either way it measures the cost of the group
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


async def _end_to_end(url: str, token: str, queue: str, count: int, groups: int | None) -> float:
    """Publish ``count`` messages over REST (batches of 500) and drain them with 8 REST
    consumers (``max`` 50, one batch ack each); messages per second over both."""
    import asyncio

    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    bodies = []
    for start in range(0, count, 500):
        messages = []
        for n in range(start, min(start + 500, count)):
            message: dict[str, object] = {"content": {"n": n, "pad": "x" * 200}}
            if groups is not None:
                message["group"] = f"g{n % groups}"
            messages.append(message)
        bodies.append(json.dumps({"messages": messages}).encode())
    done = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        started = time.perf_counter()

        async def publisher(chunk: list[bytes]) -> None:
            for body in chunk:
                response = await http.post(
                    f"/queues/{queue}/messages/batch",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                response.raise_for_status()

        async def consumer() -> None:
            nonlocal done
            deadline = time.monotonic() + 600
            while done < count and time.monotonic() < deadline:
                response = await http.get(
                    f"/queues/{queue}/messages/consume", params={"max": 50, "wait": 0.5}
                )
                if response.status_code == 204:
                    continue
                ids = [m["message_id"] for m in response.json()["messages"]]
                (await http.post("/messages/ack", json={"ids": ids})).raise_for_status()
                done += len(ids)

        await asyncio.gather(
            *(publisher(bodies[i::2]) for i in range(2)), *(consumer() for _ in range(8))
        )
        elapsed = time.perf_counter() - started
    assert done >= count, (done, count)
    return count / elapsed


def end_to_end(count: int, runs: int, only: list[str] | None = None) -> dict[str, list[float]]:
    """The cases interleaved over a real broker, ``runs`` times each (a fresh queue each)."""
    import asyncio

    from .ours import Ours

    cases: dict[str, int | None] = {"ungrouped": None, "1": 1, "100": 100, "10000": 10_000}
    if only:
        cases = {name: groups for name, groups in cases.items() if name in only}
    rates: dict[str, list[float]] = {name: [] for name in cases}
    with Ours() as ours:
        token = ours.broker.token()
        for run_index in range(runs):
            for name, groups in cases.items():
                queue = f"groups-{name}-{run_index}"
                ours.create([queue], 1, 1)
                rate = asyncio.run(_end_to_end(ours.broker.url, token, queue, count, groups))
                rates[name].append(rate)
                ours.delete([queue])
    return rates


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
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--cases", nargs="*", help="ungrouped, 1, 100, 10000 (default: all)")
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
    if args.end_to_end:
        rates = end_to_end(args.count, args.runs, args.cases)
    else:
        rates = {name: [] for name in cases}
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
        "mode": "end to end (REST publish + 8 REST consumers)" if args.end_to_end else "in process",
        "note": "shared 2-core machine",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

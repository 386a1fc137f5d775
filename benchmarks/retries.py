"""Retries: the cost of a retry policy set but unused, and a queue with 100,000 in back-off.

Run: ``python -m benchmarks.retries [--count N] [--runs R] [--backoff M]``.

* `unused_policy`: end-to-end WebSocket throughput (the suite's ``flow``:
  one producer with confirms, one consumer acking, 1 KiB messages) on a
  queue without a retry policy and on one with a policy set (exponential,
  never used: nothing is nacked), interleaved run by run on one broker,
  medians of ``--runs``.
* `backoff`: ``--backoff`` messages are published to one queue over REST,
  leased and nacked (1,000 at a time) so that every one waits a 10-minute
  back-off. The
  broker's RSS is read before and after; then 1,000 fresh messages are
  published and leased (REST, 100 per request) on that queue and on an
  empty queue, interleaved, to show that the back-off heap doesn't slow
  ready messages; then the broker restarts and the time until it answers,
  and until a ready message can be leased, is measured.

Caveats: every process shares this machine's cores, and others may be
using them: compare the figures of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import TYPE_CHECKING, Any

from .harness import MIB, save, say
from .ours import Ours
from .phases import flow, queue_names
from .workload import Plan

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

__all__ = ["main"]

POLICY = {"backoff": "exponential", "min_ms": 1000, "max_ms": 600_000}


class WithPolicy(Ours):
    """Our broker whose benchmark queues have a retry policy."""

    def create(self, queues: Sequence[str], prefetch: int, consumers: int) -> None:
        for queue in queues:
            self.http.post("/queues", json={"name": queue, "retry": POLICY}).raise_for_status()


def unused_policy(ours: Ours, count: int, runs: int) -> dict[str, Any]:
    """End-to-end msg/s without and with a retry policy, interleaved."""
    plan = Plan(count=count, runs=runs, window=500, prefetch=500, rate=1000.0, duration=1.0)
    with_policy = WithPolicy.__new__(WithPolicy)
    with_policy.__dict__ = ours.__dict__  # the same broker process and admin client
    figures: dict[str, list[float]] = {"none": [], "policy": []}
    for run in range(runs):
        for key, system in (("none", ours), ("policy", with_policy)):
            result = flow(system, plan, queue_names(f"retry-{key}", run))
            figures[key].append(result["msgs_per_s"])
            print(f"  run {run + 1} {key:<6} {result['msgs_per_s']:>10,.0f} msg/s", flush=True)
    return {
        key: {"median": statistics.median(values), "min": min(values), "max": max(values)}
        for key, values in figures.items()
    } | {"runs": figures}


def _lease_all(http: httpx.Client, queue: str, count: int, batch: int) -> list[int]:
    ids: list[int] = []
    deadline = time.monotonic() + 120
    while len(ids) < count and time.monotonic() < deadline:
        response = http.get(
            f"/queues/{queue}/messages/consume",
            params={"max": min(batch, count - len(ids)), "wait": 1.0, "lease": 600},
        )
        if response.status_code == 200:
            ids.extend(m["message_id"] for m in response.json()["messages"])
    return ids


def _ready_delivery(http: httpx.Client, queue: str, count: int = 1000) -> float:
    """Seconds to publish ``count`` messages and lease them all (100 per request)."""
    started = time.monotonic()
    for start in range(0, count, 100):
        body = {"messages": [{"content": n} for n in range(start, start + 100)]}
        http.post(f"/queues/{queue}/messages/batch", json=body).raise_for_status()
    ids = _lease_all(http, queue, count, 100)
    elapsed = time.monotonic() - started
    assert len(ids) == count, f"leased {len(ids)} of {count}"
    http.post("/messages/ack", json={"ids": ids}).raise_for_status()
    return elapsed


def backoff(ours: Ours, count: int) -> dict[str, Any]:
    """RSS with ``count`` messages in back-off, ready delivery beside them, restart."""
    http, broker = ours.http, ours.broker
    http.post("/queues", json={"name": "plain"}).raise_for_status()
    retry = {"min_ms": 600_000, "max_ms": 600_000, "jitter": 0.0}
    http.post("/queues", json={"name": "backoff", "retry": retry}).raise_for_status()
    rss_before = broker.rss()
    body = {"messages": [{"content": "x" * 1000} for _ in range(1000)]}
    for _ in range(count // 1000):
        http.post("/queues/backoff/messages/batch", json=body).raise_for_status()
    rss_published = broker.rss()
    # Leased and nacked 1,000 at a time, as consumers would: what is held at
    # once is one batch, the rest waits its back-off.
    nacked = 0
    while nacked < count:
        ids = _lease_all(http, "backoff", min(1000, count - nacked), 1000)
        if not ids:
            break
        http.post("/messages/nack", json={"ids": ids}).raise_for_status()
        nacked += len(ids)
    info = http.get("/queues/backoff").json()
    rss_backoff = broker.rss()
    say(
        f"  {info['delayed']:,} in back-off; RSS {rss_before / MIB:.0f} MiB idle, "
        f"{rss_published / MIB:.0f} published, {rss_backoff / MIB:.0f} in back-off"
    )
    timings: dict[str, list[float]] = {"plain": [], "backoff": []}
    for _ in range(3):
        for queue in ("plain", "backoff"):
            timings[queue].append(_ready_delivery(http, queue))
    medians = ", ".join(f"{q} {statistics.median(v):.3f}" for q, v in timings.items())
    say(f"  1,000 ready published+leased (s): {medians}")
    broker.stop()
    health_s = broker.start()
    started = time.monotonic()
    http.post("/queues/backoff/messages", json={"content": "after"}).raise_for_status()
    leased = _lease_all(http, "backoff", 1, 1)
    ready_s = health_s + time.monotonic() - started
    after = http.get("/queues/backoff").json()
    say(
        f"  restart: health {health_s:.2f} s, a ready message leased {ready_s:.2f} s; "
        f"{after['delayed']:,} still in back-off, RSS {broker.rss() / MIB:.0f} MiB"
    )
    return {
        "count": count,
        "in_backoff": info["delayed"],
        "rss_idle_mib": rss_before / MIB,
        "rss_published_mib": rss_published / MIB,
        "rss_backoff_mib": rss_backoff / MIB,
        "ready_1000_s": {q: statistics.median(v) for q, v in timings.items()},
        "restart_health_s": health_s,
        "restart_ready_s": ready_s,
        "after_restart_in_backoff": after["delayed"],
        "after_restart_leased": len(leased),
        "rss_after_restart_mib": broker.rss() / MIB,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retries", description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="messages per e2e run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each")
    parser.add_argument("--backoff", type=int, default=100_000, help="messages in back-off")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    print("end to end, retry policy unused vs none (WebSocket, 1 KiB, medians)")
    with Ours() as ours:
        results["unused_policy"] = unused_policy(ours, args.count, args.runs)
    none, policy = results["unused_policy"]["none"], results["unused_policy"]["policy"]
    print(f"  median: none {none['median']:,.0f}, policy {policy['median']:,.0f} msg/s "
          f"({policy['median'] / none['median'] - 1:+.1%})")  # fmt: skip
    print(f"{args.backoff:,} messages in back-off")
    with Ours() as ours:
        results["backoff"] = backoff(ours, args.backoff)
    print(f"\nsaved {save('retries', results)}")


if __name__ == "__main__":
    main()

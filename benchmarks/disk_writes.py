"""Disk writes per message: this broker (synchronous NORMAL and FULL) beside its peers.

Run: ``python -m benchmarks.disk_writes [--runs 3] [--synchronous NORMAL FULL]
[--page-sizes 4096] [--no-history]`` (``--no-history``: our broker with
``BROKER_HISTORY=false``, to see the rows' bytes without their history).

Each run reads the bytes the server process caused to be written
(``write_bytes`` of its I/O counters: for this broker its WAL and the
checkpoints copying it into the database; for the peers their logs and
stores) around two of the suite's phases:

* ``latency``: 1,000 msg/s for 10 s through one queue, so that nearly every
  message is a group commit of its own, twice (its publish; its delivery
  and ack);
* ``e2e``: the end-to-end flow (50,000 messages, 500 in flight), where a
  commit holds hundreds of messages;
* ``publish``: the same count published into an empty queue with nobody
  consuming (its throughput), then drained: the bytes per message are
  those of publishing and draining the backlog (acks, pruning and the
  queue's deletion included), the column's name notwithstanding.

Each phase's bytes are read `SETTLE_S` after it ends, for every system.

Beside the bytes, each run keeps the throughputs and the latency phase's
percentiles (publish-to-deliver and confirm), so the cost of
``synchronous=FULL`` (an fsync per group commit) shows against ``NORMAL``
from the same interleaved runs.

A SQLite commit writes every page it touches whole; bodies are appended once
to segment files beside the database (`storage.sqlite.segments`), so a
commit's pages hold small state rows only. Our broker starts fresh for each
setting and run; RabbitMQ and NATS JetStream are measured when they answer
on 127.0.0.1. Systems alternate run by run; the table shows medians (min-max).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .harness import positive_int, save, written_bytes
from .ours import Ours
from .peers import Nats, RabbitMQ
from .phases import flow, latency, publish_then_drain, queue_names
from .report import median_range
from .stats import summarise
from .workload import Plan

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .phases import System

__all__ = ["main"]

KIB = 1024


SETTLE_S = 1.5
"""How long after a phase its writes are still counted, for every system alike.

Our broker checkpoints the WAL into the database every second
(`storage.sqlite.store`): read at once, a phase's last checkpoint would be
counted in the next phase, or in none after the last.
"""


def _kib_per_message(system: System, messages: int, phase: Callable[[], Any]) -> dict[str, Any]:
    pid = system.server_pid()
    before = written_bytes(pid)
    result = phase()
    time.sleep(SETTLE_S)
    after = written_bytes(pid)
    kib = None if before is None or after is None else (after - before) / KIB / messages
    return {"kib_per_message": kib, "result": result}


def _measure(system: System, plan: Plan, run: int) -> dict[str, Any]:
    system.endpoint()  # log in before the counters start
    slow = _kib_per_message(
        system,
        round(plan.rate * plan.duration),
        lambda: latency(system, plan, queue_names("disk-latency", run)[0]),
    )
    fast = _kib_per_message(
        system, plan.count, lambda: flow(system, plan, queue_names("disk-e2e", run))
    )
    publish = _kib_per_message(
        system,
        plan.count,
        lambda: publish_then_drain(system, plan, queue_names("disk-publish", run)[0])[0],
    )
    timings = slow["result"]
    return {
        "latency_kib_per_message": slow["kib_per_message"],
        "e2e_kib_per_message": fast["kib_per_message"],
        "e2e_msgs_per_s": fast["result"]["msgs_per_s"],
        "publish_kib_per_message": publish["kib_per_message"],
        "publish_msgs_per_s": publish["result"]["msgs_per_s"],
        **{
            f"{kind}_{p}_ms": timings.get(f"{kind}_{p}_ms")
            for kind in ("deliver", "confirm")
            for p in ("p50", "p99")
        },
    }


def _ours(page_size: int, synchronous: str, env: dict[str, str]) -> Ours:
    return Ours(
        BROKER_SQLITE_PAGE_SIZE=str(page_size), BROKER_SQLITE_SYNCHRONOUS=synchronous, **env
    )


@contextlib.contextmanager
def _baseline(
    tree: Path, page_size: int, synchronous: str = "NORMAL", env: dict[str, str] | None = None
) -> Iterator[Ours]:
    """Our broker as the source tree ``tree`` has it (an older commit), on this harness.

    ``python -m transports`` imports from its working directory first, so
    the server is started from ``tree``; the clients stay this tree's.
    """
    here = Path.cwd()
    ours = _ours(page_size, synchronous, env or {})
    os.chdir(tree)
    try:
        entered = ours.__enter__()
    finally:
        os.chdir(here)
    try:
        yield entered
    finally:
        ours.__exit__(None, None, None)


def _systems(
    synchronous: list[str], page_sizes: list[int], baseline: Path | None, env: dict[str, str]
) -> Iterator[tuple[str, Callable[[], Any]]]:
    for mode in synchronous:
        for size in page_sizes:
            pages = f"{size // KIB} KiB" if size >= KIB else f"{size} B"
            if baseline is not None and size == page_sizes[0]:
                # The older tree as it would run with the same settings.
                yield (
                    f"wsbroker before ({baseline.name}), {mode}, {pages} pages",
                    partial(_baseline, baseline, size, mode, env),
                )
            yield f"wsbroker {mode}, {pages} pages", partial(_ours, size, mode, env)
    for peer in (RabbitMQ, Nats):
        reason = peer.unavailable()
        if reason is None:
            yield peer.name, peer
        else:
            print(f"skipping {peer.name}: {reason}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.disk_writes", description=__doc__)
    parser.add_argument("--runs", type=positive_int, default=3, help="runs per system")
    parser.add_argument(
        "--page-sizes",
        type=int,
        nargs="+",
        default=[4096],
        help="SQLite page sizes of our broker's fresh databases",
    )
    parser.add_argument(
        "--synchronous",
        nargs="+",
        default=["NORMAL", "FULL"],
        help="BROKER_SQLITE_SYNCHRONOUS settings of our broker",
    )
    parser.add_argument("--no-peers", action="store_true", help="measure our broker only")
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="our broker with BROKER_HISTORY=false (the rows' bytes without their history)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a source tree of an older commit (git archive) to measure beside, as it was",
    )
    args = parser.parse_args(argv)
    plan = Plan(runs=args.runs)
    env = {"BROKER_HISTORY": "false"} if args.no_history else {}
    systems = list(_systems(args.synchronous, args.page_sizes, args.baseline, env))
    if args.no_peers:
        systems = [(label, make) for label, make in systems if label.startswith("wsbroker")]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in systems}
    for run in range(args.runs):
        for label, make in systems:
            with make() as system:
                result = _measure(system, plan, run)
            runs[label].append(result)
            print(f"  {label} run {run + 1}/{args.runs}: {result}")
    print(
        f"\nDisk writes of the server per 1 KiB message: at {plan.rate:,.0f} msg/s, "
        f"and end to end ({plan.count:,} messages, {plan.window} in flight)"
    )
    print(
        f"| system | KiB/msg at {plan.rate:,.0f} msg/s | KiB/msg end to end"
        " | end to end, msg/s | KiB/msg publish only | publish only, msg/s"
        f" | deliver p50/p99 ms at {plan.rate:,.0f} msg/s | confirm p50/p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, results in runs.items():
        summary = summarise(results)
        cells = [
            median_range(summary, "latency_kib_per_message", 1),
            median_range(summary, "e2e_kib_per_message", 1),
            median_range(summary, "e2e_msgs_per_s"),
            median_range(summary, "publish_kib_per_message", 1),
            median_range(summary, "publish_msgs_per_s"),
            f"{median_range(summary, 'deliver_p50_ms', 2)} / "
            f"{median_range(summary, 'deliver_p99_ms', 2)}",
            f"{median_range(summary, 'confirm_p50_ms', 2)} / "
            f"{median_range(summary, 'confirm_p99_ms', 2)}",
        ]
        print(f"| {label} | {' | '.join(cells)} |")
    document = {"plan": msgspec.to_builtins(plan), "runs": runs}
    print(f"\nsaved {save('disk_writes', document)}")


if __name__ == "__main__":
    main()

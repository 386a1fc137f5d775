"""The SQLite writer beside a busy event loop: how much of a commit is waiting for the GIL.

Run: ``python -m benchmarks.writer_gil [--batches N] [--size N]``.

One process, as in the broker: `storage.SQLiteStorage` on a temporary
file, its writer thread committing end-to-end-shaped batches (``size``
publishes, and the deliveries and acks of the batch before), while another
thread runs pure Python in 2 ms bursts for a given share of the time (0%,
30%, 50%, 70%), standing in for the event loop. For each share it prints
and saves the writer's wall time per batch (the storage's commit counter)
and its CPU time (the thread's, from ``/proc``). With no competition the two
are equal; the gap that opens beside the busy thread is the writer waiting
for the GIL to run its Python and bind its parameters between SQLite calls.
The broker's event loop is 40-60% busy during the suite's end-to-end phase
(``python -m benchmarks.suite --only profile``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from broker_core.journal import AckOp, DeliverOp, Insert, Op, PutQueue
from broker_core.messages import Entry, QueueOptions
from storage import SQLiteStorage

from .harness import positive_int, save

__all__ = ["main"]

_BURST_S = 0.002
_BODY = b'"' + b"x" * 1022 + b'"'


def _busy(stop: threading.Event, share: float) -> None:
    """Hold the GIL in bursts of pure Python for ``share`` of the time."""
    pause = _BURST_S * (1 - share) / share
    while not stop.is_set():
        started = time.perf_counter()
        while time.perf_counter() - started < _BURST_S:
            sum(range(100))
        time.sleep(pause)


def _thread_cpu_s(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(share: float, batches: int, size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        storage = SQLiteStorage(Path(directory) / "broker.db")
        await storage.open()
        stop = threading.Event()
        busy = threading.Thread(target=_busy, args=(stop, share), daemon=True) if share else None
        try:
            now = time.time()
            await storage.write([PutQueue("q", QueueOptions(), now, now)])
            writer = next(t for t in threading.enumerate() if t.name == "sqlite-writer")
            assert writer.native_id is not None, "the writer thread runs"
            if busy is not None:
                busy.start()
            stats = storage.batch_stats
            seconds, count = stats.seconds, stats.batches
            cpu = _thread_cpu_s(writer.native_id)
            previous: list[int] = []
            for batch in range(batches):
                now = time.time()
                first = batch * size + 1
                ops: list[Op] = [
                    Insert("q", Entry(id, content=_BODY, size=len(_BODY), created_at=now))
                    for id in range(first, first + size)
                ]
                for id in previous:
                    ops += [DeliverOp(id, 1, now + 30), AckOp("q", id, now)]
                previous = list(range(first, first + size))
                await storage.write(ops)
            cpu = _thread_cpu_s(writer.native_id) - cpu
            seconds, count = stats.seconds - seconds, stats.batches - count
        finally:
            stop.set()
            if busy is not None:
                busy.join()
            await storage.close()
    return {
        "busy_share": share,
        "batches": count,
        "wall_ms_per_batch": 1000 * seconds / count,
        "cpu_ms_per_batch": 1000 * cpu / count,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.writer_gil", description=__doc__)
    parser.add_argument("--batches", type=positive_int, default=300, help="batches per share")
    parser.add_argument("--size", type=positive_int, default=270, help="messages per batch")
    args = parser.parse_args(argv)
    rows = [asyncio.run(_run(share, args.batches, args.size)) for share in (0.0, 0.3, 0.5, 0.7)]
    print(f"\nSQLite writer, batches of {args.size} publishes + the last batch's acks")
    print("  busy Python thread   wall ms/batch   writer CPU ms/batch")
    for row in rows:
        print(
            f"  {row['busy_share']:>17.0%}   {row['wall_ms_per_batch']:>13.2f}"
            f"   {row['cpu_ms_per_batch']:>19.2f}"
        )
    print(f"\nsaved {save('writer_gil', {'size': args.size, 'runs': rows})}")


if __name__ == "__main__":
    main()

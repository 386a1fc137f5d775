"""PostgreSQL batch statements: server time and round trips per message, one statement or many.

Run: ``python -m benchmarks.pg_batches [--batch 1 500] [--rounds 20] [--runs 3]``
(needs the ``postgres`` extra and a PostgreSQL on 127.0.0.1:5432 with trust auth;
a throwaway database is made and dropped).

A `storage.postgres.PostgresStorage` on its own (no broker) commits the
life of ``--batch`` messages as the broker writes it: a batch of publishes
(`Insert`), a claim (`claim`, which the shared queues use for deliveries),
then a batch of acks (`AckOp`), ``--rounds`` times. Each batch is written
both ways, interleaved: ``many`` (the transactional path: ``BEGIN``, the
fence with its ``NOTIFY``, one statement per step or ``executemany`` per
patch shape, ``COMMIT``) and ``one`` (`batches.one_statement`: the whole
batch as one statement, its own transaction). It prints and saves the
medians (min-max over ``--runs``) of wall time per message and of the
PostgreSQL backend's CPU per message (from ``/proc/<pid>/stat``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from broker_core.journal import AckOp, Insert, PutQueue
from broker_core.messages import Entry, QueueOptions

from .harness import RESULTS, save

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` (user + system)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _measure(url: str, batch: int, rounds: int, mode: str, base: int) -> dict[str, float]:
    from storage.postgres import PostgresStorage, store as store_module

    storage = PostgresStorage(url, pool_size=1, node_name=f"bench-{mode}")
    await storage.open()
    if mode == "many":
        # The transactional path: what every batch took before `one_statement`.
        original = store_module.one_statement
        store_module.one_statement = lambda *_: None  # type: ignore[assignment]
    try:
        await storage.write([PutQueue("q", QueueOptions(), time.time(), time.time())])
        pid = await storage.pool.fetchval("SELECT pg_backend_pid()")
        cpu0, wall0 = _cpu(pid), time.perf_counter()
        body = b"x" * 1024
        for round_ in range(rounds):
            ids = range(base + round_ * batch, base + (round_ + 1) * batch)
            now = time.time()
            entries = [Entry(i, content=body, size=len(body), created_at=now) for i in ids]
            await storage.write([Insert("q", entry) for entry in entries])
            claimed = await storage.claim("q", batch, time.time())
            assert len(claimed) == batch, f"claimed {len(claimed)} of {batch}"
            await storage.write([AckOp("q", e.id, time.time() + e.id * 1e-6) for e in claimed])
        wall, cpu = time.perf_counter() - wall0, _cpu(pid) - cpu0
    finally:
        if mode == "many":
            store_module.one_statement = original
        await storage.close()
    messages = batch * rounds
    return {"wall_us_per_msg": 1e6 * wall / messages, "pg_cpu_us_per_msg": 1e6 * cpu / messages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pg_batches", description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 500])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    name = f"broker_bench_{secrets.token_hex(6)}"
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    results: dict[str, Any] = {}
    try:
        base = 1
        for batch in args.batch:
            rounds = args.rounds if batch > 1 else args.rounds * 50
            runs: dict[str, list[dict[str, float]]] = {"many": [], "one": []}
            for _ in range(args.runs):
                for mode in ("many", "one"):
                    runs[mode].append(asyncio.run(_measure(url, batch, rounds, mode, base)))
                    base += batch * rounds
            for mode, measured in runs.items():
                cell = {
                    key: {
                        "median": round(statistics.median(m[key] for m in measured), 1),
                        "min": round(min(m[key] for m in measured), 1),
                        "max": round(max(m[key] for m in measured), 1),
                    }
                    for key in measured[0]
                }
                results[f"batch {batch} {mode}"] = cell
                print(
                    f"batch {batch:>4} {mode:>4}: "
                    + ", ".join(
                        f"{key} {v['median']} ({v['min']}-{v['max']})" for key, v in cell.items()
                    ),
                    flush=True,
                )
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"saved {save('pg_batches', results, RESULTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

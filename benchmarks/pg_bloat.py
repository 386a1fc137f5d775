"""Does the PostgreSQL backend's table stay small? A million publish/claim/ack cycles, measured.

    python -m benchmarks.pg_bloat [--cycles 1000000] [--batch 500]

Drives `storage.postgres.PostgresStorage` directly (no HTTP: what is
measured is the table, not the transport) on a throwaway database of the
local server: each cycle publishes a batch, claims it, delivers and acks
it in the next batch, as a node's actors do; every ``--prune-every``
cycles the broker's own pruning runs (processed messages keep the
default retention of 10,000 per queue). Every ``--sample-every`` messages
it records the sizes of ``broker_messages``, its TOAST and each index, the
live and dead tuples (``pg_stat_user_tables``) and the cycle rate; at the
end it waits for autovacuum once and records the sizes again. Writes
``benchmarks/results/pg_bloat.json``; bounded by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from typing import Any

import asyncpg

from broker_core.journal import AckOp, DeliverOp, Insert, PutQueue
from broker_core.messages import Entry, QueueOptions

from .harness import machine, save

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
_BODY = b"x" * 1024


async def _sizes(conn: Any) -> dict[str, Any]:
    """Bytes of the messages table, its TOAST and indexes; live and dead tuples."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_index i ON i.indexrelid = c.oid "
        "WHERE i.indrelid = 'broker_messages'::regclass ORDER BY c.relname"
    )
    table = await conn.fetchrow(
        "SELECT pg_relation_size('broker_messages'), "
        "pg_total_relation_size('broker_messages'), "
        "n_live_tup, n_dead_tup, autovacuum_count FROM pg_stat_user_tables "
        "WHERE relname = 'broker_messages'"
    )
    return {
        "heap_bytes": table[0],
        "total_bytes": table[1],
        "live_tuples": table[2],
        "dead_tuples": table[3],
        "autovacuums": table[4],
        "indexes": {name: size for name, size in rows},
    }


async def run(cycles: int, batch: int, prune_every: int, sample_every: int, limit_s: float) -> Any:
    from storage.postgres import PostgresStorage

    name = f"broker_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    storage = PostgresStorage(url, node_name="bloat")
    samples: list[dict[str, Any]] = []
    try:
        await storage.open()
        await storage.write([PutQueue("q", QueueOptions(), time.time(), time.time())])
        conn = await asyncpg.connect(url)
        next_id = 1
        done = 0
        started = time.monotonic()
        window = (started, 0)
        while done < cycles and time.monotonic() - started < limit_s:
            now = time.time()
            entries = [
                Entry(next_id + i, content=_BODY, size=len(_BODY), created_at=now)
                for i in range(batch)
            ]
            next_id += batch
            await storage.write([Insert("q", e) for e in entries])
            claimed = await storage.claim("q", batch, now)
            await storage.write(
                [
                    op
                    for e in claimed
                    for op in (DeliverOp(e.id, 1, now + 30), AckOp("q", e.id, now))
                ]
            )
            done += len(claimed)
            if done % prune_every < batch:
                await storage.prune(time.time())
            if done % sample_every < batch:
                at = time.monotonic()
                rate = (done - window[1]) / (at - window[0])
                window = (at, done)
                sample = {"cycles": done, "cycles_per_s": round(rate), **await _sizes(conn)}
                samples.append(sample)
                print(
                    f"{done:>9,} cycles  {rate:>7,.0f}/s  table+indexes "
                    f"{sample['total_bytes'] / 2**20:7.1f} MiB  dead {sample['dead_tuples']:,}",
                    flush=True,
                )
        elapsed = time.monotonic() - started
        await storage.prune(time.time())
        before_vacuum = await _sizes(conn)
        await conn.execute("VACUUM broker_messages")
        after_vacuum = await _sizes(conn)
        await conn.close()
        return {
            "cycles": done,
            "seconds": round(elapsed, 1),
            "cycles_per_s": round(done / elapsed),
            "batch": batch,
            "body_bytes": len(_BODY),
            "samples": samples,
            "end": before_vacuum,
            "after_vacuum": after_vacuum,
        }
    finally:
        await storage.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    """Run the cycles, print samples, save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--prune-every", type=int, default=20_000)
    parser.add_argument("--sample-every", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args(argv)
    result = asyncio.run(
        run(args.cycles, args.batch, args.prune_every, args.sample_every, args.max_seconds)
    )
    end, vacuumed = result["end"], result["after_vacuum"]
    print(
        f"\n{result['cycles']:,} cycles in {result['seconds']} s ({result['cycles_per_s']:,}/s); "
        f"broker_messages: {end['total_bytes'] / 2**20:.1f} MiB with indexes, "
        f"{end['live_tuples']:,} live rows; after VACUUM "
        f"{vacuumed['total_bytes'] / 2**20:.1f} MiB"
    )
    path = save("pg_bloat", {"machine": machine(), "result": result})
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""REST throughput: publish (single and batched) and consume + batch-ack, over keep-alive HTTP.

Run: ``python -m benchmarks.bench_rest [--count N] [--concurrency C]``. The
broker runs as its own process (TLS off, fresh data dir, durable defaults);
this process is the client. On a 2-core machine client and server share the
CPU, so the figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx

from .harness import BrokerProcess, save

PAYLOAD = "x" * 1000  # ~1 KiB message


async def _publish_single(http: httpx.AsyncClient, count: int, concurrency: int) -> float:
    body = {"content": PAYLOAD}
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await http.post("/queues/bench/messages", json=body)
            response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def _publish_batched(
    http: httpx.AsyncClient, count: int, batch: int, concurrency: int
) -> float:
    body = {"messages": [{"content": PAYLOAD}] * batch}
    remaining = count // batch

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await http.post("/queues/bench/messages/batch", json=body)
            response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (count // batch) * batch / (time.perf_counter() - started)


async def _consume_ack(http: httpx.AsyncClient, count: int, batch: int, concurrency: int) -> float:
    done = 0

    async def worker() -> None:
        nonlocal done
        while done < count:
            response = await http.get(
                "/queues/bench/messages/consume", params={"max": batch, "wait": 0.5}
            )
            if response.status_code == 204:
                return
            ids = [m["message_id"] for m in response.json()["messages"]]
            (await http.post("/messages/ack", json={"ids": ids})).raise_for_status()
            done += len(ids)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def run(count: int, concurrency: int, batch: int) -> dict[str, Any]:
    with BrokerProcess() as broker:
        headers = {"Authorization": f"Bearer {broker.token()}"}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=broker.url, headers=headers, limits=limits, timeout=60
        ) as http:
            (await http.post("/queues", json={"name": "bench"})).raise_for_status()
            single = await _publish_single(http, count, concurrency)
            batched = await _publish_batched(http, count, batch, concurrency)
            drained = await _consume_ack(http, 2 * count, batch, max(1, concurrency // 8))
    return {
        "messages": count,
        "payload_bytes": len(PAYLOAD),
        "concurrency": concurrency,
        "batch": batch,
        "publish_single_msgs_per_s": round(single),
        "publish_batch_msgs_per_s": round(batched),
        "consume_ack_batch_msgs_per_s": round(drained),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    results = asyncio.run(run(args.count, args.concurrency, args.batch))
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:>10}")
    print(f"saved {save('bench_rest', results)}")


if __name__ == "__main__":
    main()

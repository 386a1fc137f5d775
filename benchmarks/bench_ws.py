"""WebSocket end to end: publish -> push -> ack throughput, and publish-to-deliver latency.

Run: ``python -m benchmarks.bench_ws [--count N] [--rate R] [--duration S]``.

Three processes on 127.0.0.1: the broker (``python -m transports serve``, TLS
off, a fresh data dir, durable defaults), one producer and one consumer, both
using the client library (`transports.client`) on uvloop. Messages are 1 KiB
of JSON.

* **Throughput**: the consumer subscribes (prefetch ``--prefetch``), then the
  producer publishes ``--count`` messages with ``publish_many`` (``--window``
  unconfirmed at once; each confirmed only after its batch committed). The
  figure is messages / (last ack sent - first publish sent); the producer's
  own confirmed-publish rate is reported too.
* **Latency**: the producer publishes at a fixed ``--rate`` for
  ``--duration`` seconds, each message stamped with the time it was sent; the
  consumer records, per message, the time it was handed over minus that
  stamp (``time.monotonic``, one clock for all processes on Linux).

Caveats: the three processes share this machine's cores (a 2-core machine
measures a floor, not a ceiling); the broker commits every batch to SQLite
before confirming, so the disk's fsync cost is part of the figures.
Everything is bounded: in count, and by a timeout per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import httpx

from .harness import PASSWORD, BrokerProcess, save

if TYPE_CHECKING:
    from pathlib import Path

_PAD = 1024 - len('{"t":0000000.000000000,"seq":0000000,"pad":""}')
"""Padding that makes each message's JSON about 1 KiB."""


def _content(seq: int, pad: str) -> dict[str, Any]:
    return {"t": time.monotonic(), "seq": seq, "pad": pad}


# -- the worker processes ---------------------------------------------------------------


async def _produce(args: argparse.Namespace) -> dict[str, Any]:
    from transports.client import Client

    pad = "x" * _PAD
    async with Client(
        args.url, username="admin", password=PASSWORD, window=args.window, reconnect=False
    ) as client:
        await client.connect()
        if args.rate:
            total = int(args.rate * args.duration)
            started = time.monotonic()
            sends: list[asyncio.Future[int]] = []
            for seq in range(total):
                delay = started + seq / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sends.append(asyncio.ensure_future(client.publish(args.queue, _content(seq, pad))))
            await asyncio.gather(*sends)
            return {"published": total, "seconds": time.monotonic() - started}
        started = time.monotonic()
        ids = await client.publish_many(
            args.queue, (_content(seq, pad) for seq in range(args.count))
        )
        finished = time.monotonic()
        return {"published": len(ids), "started": started, "seconds": finished - started}


async def _consume(args: argparse.Namespace) -> dict[str, Any]:
    from transports.client import Client

    latencies: list[float] = []
    received = 0
    async with (
        Client(args.url, username="admin", password=PASSWORD, reconnect=False) as client,
        client.subscribe(args.queue, args.prefetch) as subscription,
    ):
        print("ready", flush=True)
        first = last = 0.0
        async for message in subscription:
            now = time.monotonic()
            if args.rate:
                latencies.append(now - message.content["t"])
            if received == 0:
                first = now
            await message.ack()
            received += 1
            if received >= args.count:
                last = time.monotonic()
                break
        await client.flush()
    return {"received": received, "first": first, "last": last, "latencies": latencies}


def _worker(args: argparse.Namespace) -> None:
    import uvloop
    from loguru import logger

    logger.disable("transports.client")

    work = _produce if args.role == "producer" else _consume
    result = uvloop.run(work(args))
    with open(args.out, "w") as file:
        json.dump(result, file)


# -- the coordinator --------------------------------------------------------------------


def _spawn(role: str, url: str, queue: str, out: Path, **options: Any) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "benchmarks.bench_ws", "--role", role, "--url", url]
    argv += ["--queue", queue, "--out", str(out)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=os.environ.copy())


def _wait_ready(process: subprocess.Popen[str], timeout: float) -> None:
    assert process.stdout is not None, "piped"
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()
    if line.strip() != "ready" or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f"consumer did not start: {line!r}")


def _result(process: subprocess.Popen[str], out: Path, timeout: float) -> dict[str, Any]:
    try:
        process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"worker failed with {process.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _throughput(url: str, work: Path, count: int, window: int, prefetch: int) -> dict[str, Any]:
    timeout = 60 + count / 500
    consumed_at, produced_at = work / "throughput-consumer.json", work / "throughput-producer.json"
    consumer = _spawn("consumer", url, "throughput", consumed_at, count=count, prefetch=prefetch)
    _wait_ready(consumer, 30)
    producer = _spawn("producer", url, "throughput", produced_at, count=count, window=window)
    produced = _result(producer, produced_at, timeout)
    consumed = _result(consumer, consumed_at, timeout)
    elapsed = consumed["last"] - produced["started"]
    return {
        "messages": count,
        "message_bytes": 1024,
        "window": window,
        "prefetch": prefetch,
        "publish_confirmed_per_s": round(count / produced["seconds"]),
        "end_to_end_per_s": round(count / elapsed),
        "elapsed_s": round(elapsed, 3),
    }


def _latency(url: str, work: Path, rate: float, duration: float, prefetch: int) -> dict[str, Any]:
    total = int(rate * duration)
    timeout = duration + 60
    consumed_at, produced_at = work / "latency-consumer.json", work / "latency-producer.json"
    consumer = _spawn(
        "consumer", url, "latency", consumed_at, count=total, prefetch=prefetch, rate=rate
    )
    _wait_ready(consumer, 30)
    producer = _spawn("producer", url, "latency", produced_at, rate=rate, duration=duration)
    produced = _result(producer, produced_at, timeout)
    consumed = _result(consumer, consumed_at, timeout)
    ms = sorted(latency * 1000 for latency in consumed["latencies"])
    return {
        "rate_per_s": rate,
        "duration_s": duration,
        "messages": len(ms),
        "achieved_rate_per_s": round(produced["published"] / produced["seconds"], 1),
        "p50_ms": round(ms[len(ms) // 2], 3),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        "max_ms": round(ms[-1], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _print_table(results: dict[str, Any]) -> None:
    t, lat = results["throughput"], results["latency"]
    rows = [
        ("messages (1 KiB)", f"{t['messages']:,}"),
        ("publish, confirmed (msg/s)", f"{t['publish_confirmed_per_s']:,}"),
        ("publish -> push -> ack (msg/s)", f"{t['end_to_end_per_s']:,}"),
        (f"latency at {lat['rate_per_s']:g} msg/s, p50 (ms)", f"{lat['p50_ms']:.2f}"),
        (f"latency at {lat['rate_per_s']:g} msg/s, p99 (ms)", f"{lat['p99_ms']:.2f}"),
        (f"latency at {lat['rate_per_s']:g} msg/s, max (ms)", f"{lat['max_ms']:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\nWebSocket benchmark (window {t['window']}, prefetch {t['prefetch']})")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value:>10}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ws", description=__doc__)
    parser.add_argument("--count", type=int, default=50_000, help="throughput messages")
    parser.add_argument("--window", type=int, default=500, help="publishes in flight")
    parser.add_argument("--prefetch", type=int, default=500, help="consumer prefetch")
    parser.add_argument("--rate", type=float, help="latency phase msg/s (default 1000)")
    parser.add_argument("--duration", type=float, default=10.0, help="latency phase seconds")
    parser.add_argument("--role", choices=("producer", "consumer"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:
        _worker(args)  # a rate means the latency phase; without one, throughput
        return
    args.rate = 1000.0 if args.rate is None else args.rate
    if args.count < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--count, --rate and --duration must be positive")
    with BrokerProcess() as broker:
        token = broker.token()
        for queue in ("throughput", "latency"):
            httpx.post(
                f"{broker.url}/queues",
                json={"name": queue},
                headers={"Authorization": f"Bearer {token}"},
            ).raise_for_status()
        work = broker.data_dir
        results = {
            "throughput": _throughput(broker.url, work, args.count, args.window, args.prefetch),
            "latency": _latency(broker.url, work, args.rate, args.duration, args.prefetch),
        }
    _print_table(results)
    path = save("bench_ws", results)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()

"""Soak: many WebSocket consumers under steady load; memory, fds and latency stay flat.

Run: ``python -m benchmarks.soak [--duration 600] [--consumers 1000] [--workers 2] [--rate 200]``.

The broker runs as ``python -m transports serve`` (TLS off, 127.0.0.1, a
fresh data dir). ``--workers`` processes hold ``--consumers`` WebSocket
consumers between them (the client library, one connection and one
subscription each, spread over ``--queues`` queues), each acking what it
gets. One more process publishes at ``--rate`` messages per second for
``--duration`` seconds, half over REST and half over WebSocket, every
message stamped with its send time (``time.monotonic``: one clock for every
process on Linux). The open-files limit is raised to its hard limit first
(the broker holds one socket per consumer).

Meanwhile the harness samples the broker process every ``--sample-s``
seconds (psutil: RSS, open file descriptors, threads, CPU) and the queues'
depths. When the publisher is done, it waits until every queue is empty
and nothing is leased, then stops the consumers and checks:

* **nothing lost**: every confirmed publish was received by a consumer;
* **memory flat**: RSS at the end of the load is within ``--rss-growth-mb``
  of RSS after the warm-up (the first ``--warmup-s`` seconds). SQLite's page
  cache (``cache_size``, 32 MiB) fills as the database grows during the
  first minutes, then RSS stays level: the default bound allows for it;
* **file descriptors flat**: within ``--fd-growth`` of the warm-up count;
* **latency bounded**: the 99th percentile of publish-to-delivery latency
  stays under ``--p99-ms`` in every ``--window-s`` window.

Caveats: every process shares this machine's cores (on 2 cores the figures
are a floor); latency includes the consumer process's own scheduling.
Everything is bounded in time: each phase has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from .crash import PASSWORD, BrokerProcess, free_port
from .harness import raise_open_files

__all__ = ["SoakConfig", "SoakReport", "main", "run_soak"]

RESULTS = Path(__file__).resolve().parent / "results"
_PAD = "x" * 200


@dataclass
class SoakConfig:
    """What one soak does (see the module docstring for each knob)."""

    duration_s: float = 600.0
    consumers: int = 1000
    workers: int = 2
    queues: int = 20
    rate: float = 200.0
    prefetch: int = 10
    ws_publishers: int = 4
    rest_publishers: int = 4
    sample_s: float = 5.0
    warmup_s: float = 30.0
    window_s: float = 60.0
    rss_growth_mb: float = 64.0
    fd_growth: int = 16
    p99_ms: float = 1000.0
    data_dir: Path | None = None


@dataclass
class SoakReport:
    """The soak's figures and verdicts; ``ok`` when nothing was lost and everything stayed flat."""

    duration_s: float = 0.0
    consumers: int = 0
    workers: int = 0
    connect_s: float = 0.0
    server_consumers: int = 0
    published: int = 0
    confirmed: int = 0
    confirmed_ws: int = 0
    confirmed_rest: int = 0
    publish_errors: int = 0
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    redelivered: int = 0
    disconnects: int = 0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_drain_mb: float = 0.0
    fds_start: int = 0
    fds_end: int = 0
    fds_peak: int = 0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_max_ms: float = 0.0
    window_p99_ms: list[float] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    memory_flat: bool = False
    fds_flat: bool = False
    latency_bounded: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.confirmed > 0
            and self.server_consumers == self.consumers
            and self.lost == 0
            and self.disconnects == 0
            and self.memory_flat
            and self.fds_flat
            and self.latency_bounded
        )

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__} | {"ok": self.ok}

    def lines(self) -> list[str]:
        worst = max(self.window_p99_ms, default=0.0)
        latency = f"{self.latency_p50_ms:,.1f} / {self.latency_p99_ms:,.1f}"
        latency += f" / {self.latency_max_ms:,.1f}"
        rows = [
            ("load (s)", f"{self.duration_s:,.0f}"),
            ("WebSocket consumers / processes", f"{self.consumers:,} / {self.workers}"),
            ("seconds to connect them all", f"{self.connect_s:.1f}"),
            ("consumers the broker counted", f"{self.server_consumers:,}"),
            ("messages confirmed", f"{self.confirmed:,}"),
            ("  over WebSocket / REST", f"{self.confirmed_ws:,} / {self.confirmed_rest:,}"),
            ("publish errors", f"{self.publish_errors:,}"),
            ("messages received", f"{self.received:,}"),
            ("lost (must be 0)", f"{self.lost:,}"),
            ("duplicates / redelivered", f"{self.duplicates:,} / {self.redelivered:,}"),
            ("consumers disconnected (must be 0)", f"{self.disconnects:,}"),
            ("server RSS after warm-up (MB)", f"{self.rss_start_mb:,.1f}"),
            ("server RSS at the end (MB)", f"{self.rss_end_mb:,.1f}"),
            ("server RSS peak / after drain (MB)",
             f"{self.rss_peak_mb:,.1f} / {self.rss_after_drain_mb:,.1f}"),
            ("server fds after warm-up / end / peak",
             f"{self.fds_start:,} / {self.fds_end:,} / {self.fds_peak:,}"),
            ("latency p50 / p99 / max (ms)", latency),
            ("worst window p99 (ms)", f"{worst:,.1f}"),
            ("memory flat / fds flat / latency bounded",
             f"{_yes(self.memory_flat)} / {_yes(self.fds_flat)} / {_yes(self.latency_bounded)}"),
        ]  # fmt: skip
        width = max(len(name) for name, _ in rows)
        out = [f"soak: {'OK' if self.ok else 'FAILED'} in {self.seconds:.0f} s"]
        out += [f"  {name.ljust(width)}  {value:>24}" for name, value in rows]
        return out


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# -- the worker processes --------------------------------------------------------------------


async def _pace(step: Any, rate: float, deadline: float) -> None:
    interval = 1.0 / rate
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        await step()
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def _publish(args: argparse.Namespace) -> dict[str, Any]:
    """Publish at ``args.rate`` for ``args.duration`` seconds, half REST, half WebSocket."""
    from transports.client import Client, ClientError, RestClient

    confirmed: dict[str, list[str]] = {"ws": [], "rest": []}
    errors = 0
    sent = 0
    queues = [f"soak-{n}" for n in range(args.queues)]
    deadline = time.monotonic() + args.duration
    counter = itertools.count()
    pending: set[asyncio.Task[None]] = set()

    def content() -> tuple[str, str, dict[str, Any]]:
        n = next(counter)
        return f"k{n}", queues[n % len(queues)], {"k": f"k{n}", "t": time.monotonic(), "p": _PAD}

    async with contextlib.AsyncExitStack() as stack:
        rest = await stack.enter_async_context(
            RestClient(args.url, access_token=args.token, timeout=30)
        )
        ws_clients = [
            await stack.enter_async_context(
                Client(args.url, access_token=args.token, reconnect=False, timeout=30)
            )
            for _ in range(args.ws_publishers)
        ]

        async def over_rest() -> None:
            nonlocal errors, sent
            key, queue, body = content()
            sent += 1
            try:
                await rest.request("POST", f"/queues/{queue}/messages", json={"content": body})
            except (ClientError, httpx.HTTPError, OSError):
                errors += 1
                return
            confirmed["rest"].append(key)

        def over_ws(client: Any) -> Any:
            async def confirm(key: str, queue: str, body: dict[str, Any]) -> None:
                nonlocal errors
                try:
                    await client.publish(queue, body)
                except ClientError:
                    errors += 1
                    return
                confirmed["ws"].append(key)

            async def step() -> None:
                nonlocal sent
                key, queue, body = content()
                sent += 1
                task = asyncio.create_task(confirm(key, queue, body))
                pending.add(task)
                task.add_done_callback(pending.discard)

            return step

        half = args.rate / 2
        await asyncio.gather(
            *(_pace(over_rest, half / args.rest_publishers, deadline)
              for _ in range(args.rest_publishers)),
            *(_pace(over_ws(c), half / len(ws_clients), deadline) for c in ws_clients),
        )  # fmt: skip
        if pending:
            await asyncio.wait(pending, timeout=60)
    return {"sent": sent, "errors": errors, "confirmed": confirmed}


async def _consume(args: argparse.Namespace) -> dict[str, Any]:
    """Hold ``args.count`` consumers, acking everything, until stdin closes."""
    from transports.client import Client, ClientError

    received: dict[str, int] = {}
    latencies: list[tuple[float, float]] = []
    redelivered = 0
    disconnects = 0
    slots = asyncio.Semaphore(50)

    async def open_one(index: int) -> tuple[Any, Any]:
        async with slots:
            client = Client(
                args.url, access_token=args.token, reconnect=False, timeout=60, connect_timeout=60
            )
            queue = f"soak-{(args.offset + index) % args.queues}"
            subscription = await client.subscribe(queue, args.prefetch).start()
            return client, subscription

    pairs = await asyncio.gather(*(open_one(i) for i in range(args.count)))
    print("ready", flush=True)

    async def consume(subscription: Any) -> None:
        nonlocal redelivered, disconnects
        try:
            async for message in subscription:
                now = time.monotonic()
                body = message.content
                received[body["k"]] = received.get(body["k"], 0) + 1
                latencies.append((now, now - body["t"]))
                redelivered += message.redelivered
                await message.ack()
        except ClientError:
            disconnects += 1

    tasks = [asyncio.create_task(consume(subscription)) for _, subscription in pairs]
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(client.close() for client, _ in pairs), return_exceptions=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "received": received,
        "latencies": latencies,
        "redelivered": redelivered,
        "disconnects": disconnects,
    }


def _worker(args: argparse.Namespace) -> None:
    from loguru import logger

    logger.disable("transports.client")
    work = _publish if args.role == "publisher" else _consume
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        result = asyncio.run(work(args))
    else:
        result = uvloop.run(work(args))
    Path(args.out).write_text(json.dumps(result))


# -- the coordinator -------------------------------------------------------------------------


def _spawn(role: str, out: Path, **options: Any) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "benchmarks.soak", "--role", role, "--out", str(out)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return subprocess.Popen(
        argv,
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait_ready(process: subprocess.Popen[str], timeout: float) -> None:
    stdout = process.stdout
    assert stdout is not None, "piped"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([stdout], [], [], 0.1)[0] and stdout.readline().strip() == "ready":
            return
        if process.poll() is not None:
            raise RuntimeError(f"a consumer worker exited with {process.returncode}")
    raise TimeoutError("consumer workers did not connect in time")


def _result(process: subprocess.Popen[str], out: Path, timeout: float) -> dict[str, Any]:
    """Wait for a worker (its stdin closed: consumers stop on that) and read its result."""
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise
    if process.returncode != 0:
        raise RuntimeError(f"a worker failed with {process.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _sample(broker: psutil.Process, http: httpx.Client, started: float) -> dict[str, Any]:
    with broker.oneshot():
        sample = {
            "t": round(time.monotonic() - started, 2),
            "rss_mb": broker.memory_info().rss / 2**20,
            "fds": broker.num_fds(),
            "threads": broker.num_threads(),
            "cpu_percent": broker.cpu_percent(),
        }
    queues = http.get("/queues").json()
    sample["pending"] = sum(q["pending"] for q in queues)
    sample["processing"] = sum(q["processing"] for q in queues)
    sample["consumers"] = sum(q["consumers"] for q in queues)
    return sample


def _median(samples: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(s[key] for s in samples)) if samples else 0.0


def run_soak(config: SoakConfig) -> SoakReport:
    """Run the soak (see the module docstring); blocking, bounded by timeouts in every phase."""
    report = SoakReport(duration_s=config.duration_s, consumers=config.consumers)
    report.workers = config.workers
    started = time.monotonic()
    raise_open_files()
    with contextlib.ExitStack() as stack:
        data_dir = config.data_dir
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        work = data_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        broker = BrokerProcess(
            data_dir / "broker",
            free_port(),
            BROKER_MAX_CONNECTIONS_PER_USER=str(config.consumers + 64),
            BROKER_MAX_CONNECTIONS_PER_ADDRESS=str(config.consumers + 64),
            BROKER_ACCESS_TOKEN_TTL_S=str(int(config.duration_s + 3600)),
        )
        asyncio.run(broker.start())
        stack.callback(broker.terminate)
        process = psutil.Process(broker.pid)
        token = httpx.post(
            f"{broker.url}/auth/token", json={"username": "admin", "password": PASSWORD}
        ).json()["access_token"]
        http = stack.enter_context(
            httpx.Client(base_url=broker.url, headers={"Authorization": f"Bearer {token}"})
        )
        for n in range(config.queues):
            http.post("/queues", json={"name": f"soak-{n}"}).raise_for_status()

        consumers: list[tuple[subprocess.Popen[str], Path]] = []
        share, extra = divmod(config.consumers, config.workers)
        offset = 0
        for index in range(config.workers):
            count = share + (index < extra)
            out = work / f"consumers-{index}.json"
            worker = _spawn(
                "consumers", out, url=broker.url, token=token, count=count, offset=offset,
                queues=config.queues, prefetch=config.prefetch,
            )  # fmt: skip
            stack.callback(_kill, worker)
            consumers.append((worker, out))
            offset += count
        connecting = time.monotonic()
        for worker, _ in consumers:
            _wait_ready(worker, 60 + config.consumers / 20)
        report.connect_s = time.monotonic() - connecting

        published_at = work / "publisher.json"
        publisher = _spawn(
            "publisher", published_at, url=broker.url, token=token, rate=config.rate,
            duration=config.duration_s, queues=config.queues,
            ws_publishers=config.ws_publishers, rest_publishers=config.rest_publishers,
        )  # fmt: skip
        stack.callback(_kill, publisher)
        load_started = time.monotonic()
        process.cpu_percent()
        samples: list[dict[str, Any]] = []
        while publisher.poll() is None and time.monotonic() < load_started + config.duration_s + 90:
            samples.append(_sample(process, http, load_started))
            time.sleep(config.sample_s)
        published = _result(publisher, published_at, 60)

        drain_deadline = time.monotonic() + 60
        last = _sample(process, http, load_started)
        while (last["pending"] or last["processing"]) and time.monotonic() < drain_deadline:
            time.sleep(0.2)
            last = _sample(process, http, load_started)
        report.rss_after_drain_mb = last["rss_mb"]
        for worker, _ in consumers:
            assert worker.stdin is not None, "piped"
            worker.stdin.close()  # all stop at once
        results = [_result(worker, out, 120) for worker, out in consumers]

    # -- the figures ----------------------------------------------------------------
    confirmed = {key for keys in published["confirmed"].values() for key in keys}
    report.published = published["sent"]
    report.publish_errors = published["errors"]
    report.confirmed = len(confirmed)
    report.confirmed_ws = len(published["confirmed"]["ws"])
    report.confirmed_rest = len(published["confirmed"]["rest"])
    received: dict[str, int] = {}
    latencies: list[tuple[float, float]] = []
    for result in results:
        for key, count in result["received"].items():
            received[key] = received.get(key, 0) + count
        latencies.extend(result["latencies"])
        report.redelivered += result["redelivered"]
        report.disconnects += result["disconnects"]
    report.received = len(received)
    report.lost = len(confirmed - set(received))
    report.duplicates = sum(count - 1 for count in received.values())

    steady = [s for s in samples if s["t"] >= config.warmup_s] or samples
    head, tail = steady[:3], steady[-3:]
    report.rss_start_mb = round(_median(head, "rss_mb"), 1)
    report.rss_end_mb = round(_median(tail, "rss_mb"), 1)
    report.rss_peak_mb = round(max((s["rss_mb"] for s in samples), default=0.0), 1)
    report.rss_after_drain_mb = round(report.rss_after_drain_mb, 1)
    report.fds_start = int(_median(head, "fds"))
    report.fds_end = int(_median(tail, "fds"))
    report.fds_peak = max((s["fds"] for s in samples), default=0)
    report.server_consumers = min((s["consumers"] for s in samples), default=0)
    report.samples = [{k: round(v, 2) for k, v in s.items()} for s in samples]
    report.memory_flat = report.rss_end_mb - report.rss_start_mb <= config.rss_growth_mb
    report.fds_flat = report.fds_end - report.fds_start <= config.fd_growth

    values = [latency * 1000 for _, latency in latencies]
    report.latency_p50_ms = round(_percentile(values, 0.5), 2)
    report.latency_p99_ms = round(_percentile(values, 0.99), 2)
    report.latency_max_ms = round(max(values, default=0.0), 2)
    if latencies:
        first = min(at for at, _ in latencies)
        windows: dict[int, list[float]] = {}
        for at, latency in latencies:
            windows.setdefault(int((at - first) // config.window_s), []).append(latency * 1000)
        report.window_p99_ms = [
            round(_percentile(windows[w], 0.99), 2) for w in sorted(windows)
        ]  # fmt: skip
    report.latency_bounded = all(p99 <= config.p99_ms for p99 in report.window_p99_ms)
    report.seconds = time.monotonic() - started
    return report


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--consumers", type=int, default=1000, help="WebSocket consumers")
    parser.add_argument("--workers", type=int, default=2, help="processes holding them")
    parser.add_argument("--queues", type=int, default=20, help="queues they spread over")
    parser.add_argument("--rate", type=float, default=200.0, help="publishes per second")
    parser.add_argument("--prefetch", type=int, default=10, help="each consumer's prefetch")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="seconds before baseline")
    parser.add_argument("--window-s", type=float, default=60.0, help="latency window (s)")
    parser.add_argument("--rss-growth-mb", type=float, default=64.0, help="allowed RSS growth")
    parser.add_argument("--fd-growth", type=int, default=16, help="allowed fd growth")
    parser.add_argument("--p99-ms", type=float, default=1000.0, help="latency p99 bound (ms)")
    parser.add_argument("--json", type=Path, help="where to write the report (default results/)")
    # Worker processes.
    parser.add_argument("--role", choices=("consumers", "publisher"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ws-publishers", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--rest-publishers", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role is not None:
        _worker(args)
        return 0
    if min(args.duration, args.consumers, args.workers, args.queues, args.rate) <= 0:
        parser.error("--duration, --consumers, --workers, --queues and --rate must be positive")
    config = SoakConfig(
        duration_s=args.duration,
        consumers=args.consumers,
        workers=args.workers,
        queues=args.queues,
        rate=args.rate,
        prefetch=args.prefetch,
        sample_s=args.sample_s,
        warmup_s=min(args.warmup_s, args.duration / 3),
        window_s=args.window_s,
        rss_growth_mb=args.rss_growth_mb,
        fd_growth=args.fd_growth,
        p99_ms=args.p99_ms,
    )
    report = run_soak(config)
    print("\n".join(report.lines()))
    path = args.json or RESULTS / "soak.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    print(f"\nsaved {path}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

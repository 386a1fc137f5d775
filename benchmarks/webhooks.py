"""Webhooks: messages per second pushed to a local endpoint answering 200 at once.

Run: ``python -m benchmarks.webhooks [--count N] [--runs R]``.

The broker runs as ``python -m transports serve`` (SQLite, TLS off) with
``BROKER_WEBHOOK_ALLOWED_HOSTS=127.0.0.1``; the endpoint is an asyncio
protocol in this process (its own thread) that answers every POST with an
empty 200, keeping connections alive. For each concurrency (1, 16, 64) and
run, ``--count`` messages are published (batches of 100) to a fresh queue,
then a webhook is created on it and the time until the endpoint has
received them all is measured, with the broker process's CPU seconds over
the same span (user + system, from /proc via psutil). Runs are interleaved
across concurrencies; medians are reported.

Caveats: the endpoint shares the machine with the broker (and, here, with
other people's work): compare the figures of one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from typing import Any

from .harness import BrokerProcess, cpu_seconds, machine, save, say

__all__ = ["main"]

CONCURRENCIES = (1, 16, 64)


class _Endpoint(asyncio.Protocol):
    """One connection: answers each complete request with an empty 200."""

    def __init__(self, counter: _Counter) -> None:
        self.counter = counter
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 : head.find(b"\r\n", start)]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.counter.count += 1
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


class _Counter:
    def __init__(self) -> None:
        self.count = 0


class Receiver:
    """The endpoint, served by an event loop in a thread of its own."""

    def __init__(self) -> None:
        self.counter = _Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            self._loop.create_server(lambda: _Endpoint(self.counter), "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def one_run(
    broker: BrokerProcess, receiver: Receiver, concurrency: int, run: int, count: int
) -> dict[str, float]:
    """Publish ``count`` messages, push them all through one webhook; figures of the drain."""
    http = broker.http()
    try:
        queue = f"wh-{concurrency}-{run}"
        http.post("/queues", json={"name": queue}).raise_for_status()
        for start in range(0, count, 100):
            body = {
                "messages": [{"content": {"n": n}} for n in range(start, min(start + 100, count))]
            }
            http.post(f"/queues/{queue}/messages/batch", json=body).raise_for_status()
        before = receiver.counter.count
        cpu_before = cpu_seconds(broker.pid) or 0.0
        started = time.perf_counter()
        url = f"http://127.0.0.1:{receiver.port}/hook"
        response = http.post(
            f"/queues/{queue}/webhooks", json={"url": url, "concurrency": concurrency}
        )
        response.raise_for_status()
        deadline = time.monotonic() + 300
        while receiver.counter.count - before < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {receiver.counter.count - before} of {count} posted")
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        cpu = (cpu_seconds(broker.pid) or 0.0) - cpu_before
        http.delete(f"/queues/{queue}/webhooks/{response.json()['id']}").raise_for_status()
        return {
            "msgs_per_s": count / elapsed,
            "seconds": elapsed,
            "cpu_s": cpu,
            "cpu_us_per_delivery": cpu / count * 1e6,
        }
    finally:
        http.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webhooks", description=__doc__)
    parser.add_argument("--count", type=int, default=3000, help="messages per run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each")
    args = parser.parse_args(argv)
    receiver = Receiver()
    receiver.start()
    runs: dict[int, list[dict[str, float]]] = {c: [] for c in CONCURRENCIES}
    try:
        with BrokerProcess(BROKER_WEBHOOK_ALLOWED_HOSTS="127.0.0.1") as broker:
            for run in range(args.runs):
                for concurrency in CONCURRENCIES:
                    figures = one_run(broker, receiver, concurrency, run, args.count)
                    runs[concurrency].append(figures)
                    say(
                        f"  run {run + 1} concurrency {concurrency:>2}: "
                        f"{figures['msgs_per_s']:>8,.0f} msg/s, "
                        f"broker CPU {figures['cpu_us_per_delivery']:,.0f} µs/delivery"
                    )
    finally:
        receiver.stop()
    results: dict[str, Any] = {"count": args.count, "machine": machine(), "runs": runs}
    results["medians"] = {
        str(c): {
            "msgs_per_s": statistics.median(r["msgs_per_s"] for r in runs[c]),
            "cpu_us_per_delivery": statistics.median(r["cpu_us_per_delivery"] for r in runs[c]),
        }
        for c in CONCURRENCIES
    }
    for c, median in results["medians"].items():
        print(
            f"concurrency {c:>2}: {median['msgs_per_s']:>8,.0f} msg/s (median), "
            f"{median['cpu_us_per_delivery']:,.0f} µs broker CPU per delivery"
        )
    print(f"\nsaved {save('webhooks', results)}")


if __name__ == "__main__":
    main()

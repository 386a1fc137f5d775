"""Memory and scale: a million pending messages, a restart with them, 5,000 WebSocket consumers.

Run alone: ``python -m benchmarks.memory [--pending 1000000]`` (the `pending`
phase; the suite runs both as ``--only memory``).

* `pending`: a fresh broker gets ``plan.pending`` 1 KiB messages in one
  queue, published over REST in batches of 1,000 (4 requests in flight);
  its RSS is read when they are all stored. Then it is stopped cleanly and
  started again: the restart counts until ``/health`` answers, and until a
  REST consume returns the first message. The same after ``kill -9``
  (recovery marks the pending messages redelivered).
* `consumers`: ``plan.ws_consumers`` WebSocket connections, one
  subscription each (prefetch 10), spread over ``plan.consumer_processes``
  client processes; then ``messages_per_consumer`` messages per consumer
  are published and every one must be delivered and acked (the processes
  report the ids they got). The broker's per-user and per-address
  connection limits (``BROKER_MAX_CONNECTIONS_PER_USER``, 1,000, and
  ``BROKER_MAX_CONNECTIONS_PER_ADDRESS``, 1,024, by default) are raised for it,
  and RLIMIT_NOFILE to its hard limit.

The broker's RSS is sampled every 0.2 s by a thread (the peak is reported
too). Every loop has a deadline; a phase that runs out reports how far it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import psutil

from .harness import MIB, WorkerError, Workers, raise_open_files
from .ours import Ours
from .worker import Spec
from .workload import rest_body

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .harness import BrokerProcess
    from .workload import Plan

__all__ = ["RssSampler", "consumers", "pending"]

BATCH = 1000
IN_FLIGHT = 4


class RssSampler:
    """The peak RSS of a process, sampled by a thread while the context is open."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _mb(value: float) -> float:
    return round(value / MIB, 1)


def _grouped_body(start: int, size: int, groups: int) -> bytes:
    """A REST batch whose messages go round the ``groups`` groups (``g0``, ``g1``, ...)."""
    one = rest_body()[:-1]
    return (
        b'{"messages":['
        + b",".join(one + b',"group":"g%d"}' % ((start + n) % groups) for n in range(size))
        + b"]}"
    )


async def _publish(
    url: str, token: str, queue: str, total: int, deadline: float, groups: int = 0
) -> int:
    """Publish ``total`` messages in REST batches; return how many were stored in time."""
    payload = rest_body(BATCH)
    # A group name makes each message longer: half batches stay under the body limit.
    step = BATCH // 2 if groups else BATCH
    batches = iter(range(0, total, step))
    stored = 0

    async def sender(http: httpx.AsyncClient) -> None:
        nonlocal stored
        for start in batches:
            if time.monotonic() > deadline:
                return
            size = min(step, total - start)
            if groups:
                content = _grouped_body(start, size, groups)
            else:
                content = payload if size == BATCH else rest_body(size)
            response = await http.post(f"/queues/{queue}/messages/batch", content=content)
            response.raise_for_status()
            stored += size

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        await asyncio.gather(*(sender(http) for _ in range(IN_FLIGHT)))
    return stored


def _first_message(broker: BrokerProcess, token: str, queue: str, timeout: float) -> bool:
    """Whether a REST consume returns a message within ``timeout`` (retrying 503/204)."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=broker.url, headers=headers, timeout=timeout + 5) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                response = http.get(
                    f"/queues/{queue}/messages/consume", params={"max": 1, "wait": 1, "lease": 600}
                )
                if response.status_code == 200 and response.json()["messages"]:
                    return True
            time.sleep(0.01)
    return False


def _restart(broker: BrokerProcess, token: str, queue: str, *, kill: bool) -> dict[str, Any]:
    stop_s = broker.stop(kill=kill)
    started = time.monotonic()
    health_s = broker.start(timeout=300)
    got = _first_message(broker, token, queue, timeout=300)
    ready_s = time.monotonic() - started
    return {
        "stop_s": round(stop_s, 2),
        "health_s": round(health_s, 2),
        "ready_s": round(ready_s, 2) if got else None,
        "rss_mb": _mb(broker.rss()),
    }


def pending(plan: Plan, groups: int = 0) -> dict[str, Any]:
    """RSS with ``plan.pending`` messages in one queue, and the restarts with them.

    With ``groups``, the messages go round that many message groups.
    """
    queue = "wsbroker-bench-backlog"
    with Ours() as ours:
        broker = ours.broker
        ours.create([queue], 1, 1)
        token = broker.token()
        idle = broker.rss()
        started = time.monotonic()
        deadline = started + max(120.0, plan.pending / 2000)
        with RssSampler(broker.pid) as sampler:
            stored = asyncio.run(_publish(broker.url, token, queue, plan.pending, deadline, groups))
            publish_s = time.monotonic() - started
            info = ours.http.get(f"/queues/{queue}").json()
            time.sleep(2.0)  # let the write-behind and the body cache settle
            held = broker.rss()
        # The database, its WAL and watermark, and the body segments beside them.
        database = sum(
            path.stat().st_size for path in broker.data_dir.glob("broker.db*") if path.is_file()
        )
        segments = sum(path.stat().st_size for path in broker.data_dir.glob("broker.db-*/*.seg"))
        clean = _restart(broker, token, queue, kill=False)
        crash = _restart(broker, token, queue, kill=True)
    return {
        "target": plan.pending,
        "groups": groups,
        "stored": stored,
        "pending": info["pending"],
        "publish_s": round(publish_s, 1),
        "publish_msgs_per_s": round(stored / publish_s),
        "rss_idle_mb": _mb(idle),
        "rss_pending_mb": _mb(held),
        "rss_peak_mb": _mb(sampler.peak),
        "database_mb": _mb(database),
        "segments_mb": _mb(segments),
        "restart": clean,
        "restart_after_kill": crash,
    }


def _split(total: int, parts: int) -> Iterator[int]:
    for index in range(parts):
        yield total // parts + (1 if index < total % parts else 0)


def consumers(plan: Plan) -> dict[str, Any]:
    """RSS and delivery with ``plan.ws_consumers`` concurrent WebSocket consumers."""
    raise_open_files()
    queue = "wsbroker-bench-fanout"
    total = plan.ws_consumers * plan.messages_per_consumer
    limit = str(plan.ws_consumers * 2)
    with (
        Ours(
            BROKER_MAX_CONNECTIONS_PER_USER=limit, BROKER_MAX_CONNECTIONS_PER_ADDRESS=limit
        ) as ours,
        Workers() as workers,
    ):
        broker = ours.broker
        ours.create([queue], 10, plan.ws_consumers)
        idle = broker.rss()
        endpoint = ours.endpoint()
        with RssSampler(broker.pid) as sampler:
            started = time.monotonic()
            holders = [
                workers.start(
                    Spec(
                        module="benchmarks.ours",
                        role="consume",
                        endpoint=endpoint,
                        queues=[queue],
                        connections=share,
                        prefetch=10,
                        until_stop=True,
                        record_ids=True,
                        timeout=900,
                    )
                )
                for share in _split(plan.ws_consumers, plan.consumer_processes)
            ]
            for holder in holders:
                holder.wait_ready(600)
            connect_s = time.monotonic() - started
            time.sleep(1.0)
            connected = broker.rss()
            started = time.monotonic()
            stored = asyncio.run(_publish(broker.url, broker.token(), queue, total, started + 300))
            processed = 0
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                processed = ours.http.get(f"/queues/{queue}").json()["processed"]
                if processed >= stored:
                    break
                time.sleep(0.1)
            deliver_s = time.monotonic() - started
            after = broker.rss()
            for holder in holders:
                holder.stop()
            failure: str | None
            try:
                results = [holder.result(timeout=120) for holder in holders]
            except WorkerError as exc:
                results, failure = [], str(exc)
            else:
                failure = None
    ids = [message_id for result in results for message_id in result["ids"]]
    return {
        "consumers": plan.ws_consumers,
        "processes": plan.consumer_processes,
        "published": stored,
        "processed": processed,
        "received": len(ids),
        "distinct": len(set(ids)),
        "every_message_delivered": len(set(ids)) == stored == total and processed >= stored,
        "connect_s": round(connect_s, 1),
        "deliver_s": round(deliver_s, 2),
        "rss_idle_mb": _mb(idle),
        "rss_connected_mb": _mb(connected),
        "rss_after_mb": _mb(after),
        "rss_peak_mb": _mb(sampler.peak),
        "worker_failure": failure,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the `pending` phase alone; print and save its result."""
    import argparse
    import json

    from .harness import positive_int, save
    from .workload import Plan

    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--pending", type=positive_int, default=1_000_000)
    args = parser.parse_args(argv)
    result = pending(Plan(pending=args.pending))
    print(json.dumps(result, indent=2))
    print(f"saved {save('memory_pending', result)}")


if __name__ == "__main__":
    main()

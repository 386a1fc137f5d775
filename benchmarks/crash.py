"""Crash safety: ``kill -9`` the broker at random moments under load, then check its promises.

Run: ``python -m benchmarks.crash [--runs N] [--messages M] [--seed S]``.

The broker runs as ``python -m transports serve`` (TLS off, 127.0.0.1, its
own data dir). Each *run* puts a steady load on it and kills it with SIGKILL
at a random moment, then starts it again on the same data dir:

* a WebSocket peer (the client library, one connection) subscribes with a
  prefetch, acks every delivery and publishes pipelined messages;
* a REST publisher posts single messages and small batches;
* a REST consumer leases batches, acks most of them and nacks (requeues) a few.

Every message's content carries a unique key, so the checker can tell which
publish a delivery belongs to without trusting the broker's ids. The harness
numbers every event it sees with one counter (publish sent, confirm received,
delivery received, ack sent or answered), which orders them as the broker
must have seen them where the protocol guarantees an order: an ack answered
over REST (or sent on the WebSocket before a publish on the same connection)
is committed once any publish sent after it is confirmed, since one
write-behind buffer commits operations in order (DESIGN.md, data flow 4-5).

After the last run, a drain consumes and acks whatever is left. The checker
then verifies, over every run:

* **no loss**: every confirmed publish was delivered at least once, with the
  message id its confirm named;
* **no phantom**: every delivery belongs to a publish that was sent (one id
  per key, the confirmed one when there was a confirm);
* **duplicates have a cause**: a message delivered again was nacked, or was
  unacked when the broker was killed, or was acked but the ack may have been
  lost in the crash (not yet known committed); a duplicate of a committed ack,
  or any duplicate within one run without a nack, is a violation; every
  duplicate is marked ``redelivered``;
* **counts agree**: after each restart nothing is processing, the queue's
  pending and failed counts match the messages browsed, every pending message
  is marked redelivered (an unclean stop), and the processed count never goes
  back and covers every ack known committed; after the drain, the processed
  count equals the messages stored and nothing else is left.

Everything is bounded: messages per run, seconds per run, and a timeout on
every phase. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "PASSWORD",
    "BrokerProcess",
    "CrashConfig",
    "CrashReport",
    "Ledger",
    "check",
    "free_port",
    "main",
    "run_crash",
]

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "crash-harness-admin-password"
QUEUE = "crash"
_LEASE_S = 120.0
"""REST leases outlive any run: an expired lease would be a legitimate duplicate."""
_PAD = "x" * 64


class BrokerProcess:
    """``python -m transports serve`` on a fixed data dir and port, killable and restartable.

    Args:
        data_dir: the broker's data dir (kept across restarts).
        port: the TCP port on 127.0.0.1 (kept across restarts).
        **env: extra ``BROKER_*`` settings.
    """

    def __init__(self, data_dir: Path, port: int, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port
        self.env = {
            **os.environ,
            "BROKER_HOST": "127.0.0.1",
            "BROKER_PORT": str(port),
            "BROKER_DATA_DIR": str(data_dir),
            "BROKER_TLS": "false",
            "BROKER_ADMIN_PASSWORD": PASSWORD,
            "BROKER_LOG_LEVEL": "WARNING",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "start() first"
        return self.process.pid

    def spawn(self) -> None:
        """Start the process without waiting for it to serve."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "server.stderr", "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "transports", "serve"],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.starts += 1

    async def start(self) -> None:
        """Start the process and wait until ``/health`` answers 200 (at most a minute).

        Raises:
            RuntimeError: the process exited (its stderr is in the data dir).
            TimeoutError: it did not become healthy in time.
        """
        self.spawn()
        assert self.process is not None, "just spawned"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if self.process.poll() is not None:
                    tail = (self.data_dir / "server.stderr").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"broker exited with {self.process.returncode}: {tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError("the broker did not become healthy")
                await asyncio.sleep(0.02)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def terminate(self) -> None:
        """A graceful stop (SIGTERM), or SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- what the harness saw ----------------------------------------------------------------


@dataclass(slots=True)
class Sent:
    """One publish the harness sent."""

    key: str
    via: str
    conn: int
    run: int
    seq: int
    confirmed_seq: int | None = None
    message_id: int | None = None


@dataclass(slots=True)
class Delivery:
    """One delivery the harness received, and how it settled it."""

    message_id: int
    key: str | None
    redelivered: bool
    attempt: int
    via: str
    conn: int
    run: int
    seq: int
    ack_seq: int | None = None
    ack_run: int | None = None
    nacked: bool = False


@dataclass
class Ledger:
    """Every publish, confirm, delivery and settlement, numbered by one counter."""

    sent: dict[str, Sent] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    count_errors: list[str] = field(default_factory=list)
    ack_refused: int = 0
    delivered_uncommitted: int = 0
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def tick(self) -> int:
        """The next event number."""
        return next(self._seq)

    def send(self, key: str, via: str, conn: int, run: int) -> Sent:
        """Record a publish about to be sent (numbered before it leaves)."""
        sent = self.sent[key] = Sent(key, via, conn, run, self.tick())
        return sent

    def confirm(self, sent: Sent, message_id: int) -> None:
        """Record the confirm of a publish."""
        sent.confirmed_seq = self.tick()
        sent.message_id = message_id

    def deliver(
        self,
        message_id: int,
        content: Any,
        redelivered: bool,
        attempt: int,
        via: str,
        conn: int,
        run: int,
    ) -> Delivery:
        """Record a delivery as received."""
        key = content.get("k") if isinstance(content, dict) else None
        delivery = Delivery(message_id, key, redelivered, attempt, via, conn, run, self.tick())
        self.deliveries.append(delivery)
        return delivery

    def acked(self, delivery: Delivery, run: int) -> None:
        """Record an ack: sent on its WebSocket, or answered over REST."""
        delivery.ack_seq = self.tick()
        delivery.ack_run = run


# -- the load ------------------------------------------------------------------------------


@dataclass
class CrashConfig:
    """What one harness run does.

    Args:
        runs: how many times the broker is killed under load.
        messages: most publishes per run (over all publishers).
        rate: publishes per second over all publishers.
        min_s: shortest time from the start of the load to the kill.
        max_s: longest time from the start of the load to the kill.
        startup_kills: runs whose restart is also killed once while it starts (recovery).
        seed: the random seed (kill moments, nacks); ``None`` picks one.
        prefetch: the WebSocket consumer's prefetch.
        nack_ratio: share of REST deliveries nacked (requeued) instead of acked.
        synchronous: the SQLite ``PRAGMA synchronous`` of the broker.
        data_dir: where the broker keeps its data (a temporary dir when ``None``).
    """

    runs: int = 10
    messages: int = 5000
    rate: float = 1500.0
    min_s: float = 0.3
    max_s: float = 2.0
    startup_kills: int = 1
    seed: int | None = None
    prefetch: int = 32
    nack_ratio: float = 0.05
    synchronous: str = "NORMAL"
    data_dir: Path | None = None


class _Run:
    """The load of one run, recorded in the ledger."""

    def __init__(self, url: str, ledger: Ledger, run: int, config: CrashConfig) -> None:
        self.url = url
        self.ledger = ledger
        self.run = run
        self.config = config
        self.rng = random.Random(f"{config.seed}-{run}")
        self.stop = asyncio.Event()
        self.budget = config.messages
        self.conn = run * 10 + 1  # the WebSocket connection's id in the ledger

    def take(self, count: int) -> bool:
        """Spend ``count`` of the run's publish budget; ``False`` when it is spent."""
        if self.budget < count or self.stop.is_set():
            return False
        self.budget -= count
        return True

    async def ws_peer(self, ready: asyncio.Event) -> None:
        from transports.client import Client, ClientError

        ledger = self.ledger
        async with Client(
            self.url,
            username="admin",
            password=PASSWORD,
            reconnect=False,
            connect_timeout=10.0,
            window=200,
        ) as client:
            try:
                subscription = await client.subscribe(QUEUE, self.config.prefetch).start()
            finally:
                ready.set()

            async def consume() -> None:
                with contextlib.suppress(ClientError):
                    async for message in subscription:
                        delivery = ledger.deliver(
                            message.message_id,
                            message.content,
                            message.redelivered,
                            message.attempt,
                            "ws",
                            self.conn,
                            self.run,
                        )
                        if not client.connected:
                            return
                        await message.ack()
                        await client.flush()  # the ack frame is sent now
                        ledger.acked(delivery, self.run)

            consumer = asyncio.create_task(consume())
            await self._pace(self._ws_publish(client), self.config.rate / 2)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.stop.wait(), self.config.max_s + 30)
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    def _ws_publish(self, client: Any) -> Any:
        from transports.client import ClientError

        ledger = self.ledger
        window = asyncio.Semaphore(200)
        index = itertools.count()
        confirming: set[asyncio.Task[None]] = set()

        async def publish_one() -> bool:
            if not self.take(1) or not client.connected:
                return False
            await window.acquire()
            key = f"w{self.run}.{next(index)}"
            sent = ledger.send(key, "ws", self.conn, self.run)

            async def confirm() -> None:
                try:
                    ledger.confirm(sent, await client.publish(QUEUE, {"k": key, "pad": _PAD}))
                except ClientError:
                    pass
                finally:
                    window.release()

            task = asyncio.ensure_future(confirm())
            confirming.add(task)
            task.add_done_callback(confirming.discard)
            return True

        return publish_one

    async def rest_publisher(self) -> None:
        from transports.client import ClientError, RestClient

        ledger = self.ledger
        index = itertools.count()
        async with RestClient(self.url, username="admin", password=PASSWORD, timeout=10) as rest:

            async def publish_one() -> bool:
                batch = 5 if self.rng.random() < 0.2 else 1
                if not self.take(batch):
                    return False
                keys = [f"r{self.run}.{next(index)}" for _ in range(batch)]
                sents = [ledger.send(key, "rest", 0, self.run) for key in keys]
                try:
                    if batch == 1:
                        response = await rest.request(
                            "POST",
                            f"/queues/{QUEUE}/messages",
                            json={"content": {"k": keys[0], "pad": _PAD}},
                        )
                        ids = [response.json()["message_id"]]
                    else:
                        response = await rest.request(
                            "POST",
                            f"/queues/{QUEUE}/messages/batch",
                            json={"messages": [{"content": {"k": k, "pad": _PAD}} for k in keys]},
                        )
                        ids = [m["message_id"] for m in response.json()["messages"]]
                except (ClientError, httpx.HTTPError, OSError):
                    return False
                for sent, message_id in zip(sents, ids, strict=True):
                    ledger.confirm(sent, message_id)
                return True

            # Four publishers in parallel: each waits for its answer (no pipelining over REST).
            share = self.config.rate / 2 / 4
            await asyncio.gather(*(self._pace(publish_one, share) for _ in range(4)))

    async def rest_consumer(self) -> None:
        from transports.client import ClientError, RestClient

        ledger = self.ledger
        rng = self.rng
        async with RestClient(self.url, username="admin", password=PASSWORD, timeout=10) as rest:
            while not self.stop.is_set():
                try:
                    messages = await rest.consume(QUEUE, max=20, wait=0.1, lease=_LEASE_S)
                    deliveries = [
                        ledger.deliver(
                            m.message_id, m.content, m.redelivered, m.attempt, "rest", 0, self.run
                        )
                        for m in messages
                    ]
                    nacks = [d for d in deliveries if rng.random() < self.config.nack_ratio]
                    acks = [d for d in deliveries if d not in nacks]
                    if acks:
                        result = await rest.ack_ids([d.message_id for d in acks])
                        settled = set(result.settled)
                        for delivery in acks:
                            if delivery.message_id in settled:
                                ledger.acked(delivery, self.run)
                            else:
                                ledger.ack_refused += 1
                    if nacks:
                        result = await rest.nack_ids([d.message_id for d in nacks], requeue=True)
                        for delivery in nacks:
                            delivery.nacked = delivery.message_id in set(result.settled)
                except (ClientError, httpx.HTTPError, OSError):
                    return

    async def _pace(self, step: Any, rate: float) -> None:
        """Call ``step`` at ``rate`` per second until it returns ``False`` or the run stops."""
        interval = 1.0 / rate
        next_at = time.monotonic()
        deadline = next_at + self.config.max_s + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            if not await step():
                return
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def _run_load(broker: BrokerProcess, ledger: Ledger, run: int, config: CrashConfig) -> float:
    """Put the load on the broker and kill it at a random moment; return when it was killed."""
    load = _Run(broker.url, ledger, run, config)
    ready = asyncio.Event()
    peer = asyncio.create_task(load.ws_peer(ready))
    await asyncio.wait_for(ready.wait(), 30)
    tasks = [
        peer,
        asyncio.create_task(load.rest_publisher()),
        asyncio.create_task(load.rest_consumer()),
    ]
    after = load.rng.uniform(config.min_s, config.max_s)
    await asyncio.wait(tasks, timeout=after, return_when=asyncio.FIRST_EXCEPTION)
    broker.kill()
    load.stop.set()
    _, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    from transports.client import ClientError

    for task in tasks:
        exc = task.exception() if task.done() and not task.cancelled() else None
        # After the kill, connection errors are the expected end of every task.
        if exc is not None and not isinstance(exc, ClientError | httpx.HTTPError | OSError):
            raise exc
    return after


# -- checks against the broker -------------------------------------------------------------


async def _browse(http: httpx.AsyncClient, status: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        response = await http.get(f"/queues/{QUEUE}/messages", params=params)
        response.raise_for_status()
        page = response.json()
        out.extend(page["messages"])
        cursor = page.get("next_cursor")
        if cursor is None:
            return out


async def _token(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post("/auth/token", json={"username": "admin", "password": PASSWORD})
        response.raise_for_status()
        return str(response.json()["access_token"])


def _durable_marks(ledger: Ledger) -> tuple[dict[int, int], dict[int, int]]:
    """The latest send number of a confirmed publish: per run, and per WebSocket connection.

    Only a publish to the same broker process orders an ack before it: one sent
    after a restart says nothing about what the killed process committed.
    """
    per_run: dict[int, int] = {}
    per_conn: dict[int, int] = {}
    for sent in ledger.sent.values():
        if sent.confirmed_seq is None:
            continue
        per_run[sent.run] = max(per_run.get(sent.run, -1), sent.seq)
        if sent.via == "ws":
            per_conn[sent.conn] = max(per_conn.get(sent.conn, -1), sent.seq)
    return per_run, per_conn


def _ack_committed(delivery: Delivery, per_run: dict[int, int], per_conn: dict[int, int]) -> bool:
    """Whether the ack is known committed: a publish ordered after it was confirmed."""
    if delivery.ack_seq is None or delivery.ack_run is None:
        return False
    if delivery.via == "rest":
        return per_run.get(delivery.ack_run, -1) > delivery.ack_seq
    return per_conn.get(delivery.conn, -1) > delivery.ack_seq


async def _check_restart(url: str, ledger: Ledger, run: int, last_processed: int) -> int:
    """Counts right after a restart following a kill; return the processed count."""
    token = await _token(url)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        info = (await http.get(f"/queues/{QUEUE}")).json()
        pending = await _browse(http, "pending")
        failed = await _browse(http, "failed")
    errors = ledger.count_errors
    where = f"after kill {run}"
    if info["processing"] != 0:
        errors.append(f"{where}: {info['processing']} messages still processing")
    if info["pending"] != len(pending):
        errors.append(f"{where}: pending count {info['pending']} != {len(pending)} browsed")
    if info["failed"] != len(failed):
        errors.append(f"{where}: failed count {info['failed']} != {len(failed)} browsed")
    unmarked = [m["message_id"] for m in pending if not m["redelivered"]]
    if unmarked:
        errors.append(f"{where}: {len(unmarked)} pending messages not marked redelivered")
    if info["processed"] < last_processed:
        errors.append(f"{where}: processed went back from {last_processed} to {info['processed']}")
    per_run, per_conn = _durable_marks(ledger)
    committed = {d.message_id for d in ledger.deliveries if _ack_committed(d, per_run, per_conn)}
    if info["processed"] < len(committed):
        errors.append(
            f"{where}: processed {info['processed']} < {len(committed)} acks known committed"
        )
    ledger.restarts.append(
        {"after_run": run, "pending": info["pending"], "processed": info["processed"]}
    )
    return int(info["processed"])


async def _drain(url: str, ledger: Ledger, run: int) -> None:
    """Consume and ack everything left, then check the final counts."""
    from transports.client import RestClient

    empty = 0
    async with RestClient(url, username="admin", password=PASSWORD, timeout=30) as rest:
        deadline = time.monotonic() + 120
        while empty < 2 and time.monotonic() < deadline:
            messages = await rest.consume(QUEUE, max=1000, wait=0.2, lease=_LEASE_S)
            if not messages:
                empty += 1
                continue
            empty = 0
            deliveries = [
                ledger.deliver(m.message_id, m.content, m.redelivered, m.attempt, "rest", 0, run)
                for m in messages
            ]
            result = await rest.ack_ids([d.message_id for d in deliveries])
            settled = set(result.settled)
            for delivery in deliveries:
                if delivery.message_id in settled:
                    ledger.acked(delivery, run)
                else:
                    ledger.ack_refused += 1
        # A barrier: once this publish is confirmed, every ack above is committed.
        response = await rest.request(
            "POST", f"/queues/{QUEUE}/messages", json={"content": {"k": "barrier"}}
        )
        barrier = response.json()["message_id"]
        leased = await rest.consume(QUEUE, max=1, wait=1.0, lease=_LEASE_S)
        await rest.ack_ids([m.message_id for m in leased])
        token = await rest.access_token()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        info = (await http.get(f"/queues/{QUEUE}")).json()
        stored = await _browse(http, None)
    errors = ledger.count_errors
    left = {k: info[k] for k in ("pending", "processing", "failed") if info[k]}
    if left:
        errors.append(f"after the drain: {left} left in the queue")
    by_status = Counter(m["status"] for m in stored)
    if set(by_status) - {"processed"}:
        errors.append(f"after the drain: stored messages by status {dict(by_status)}")
    if info["processed"] != len(stored):
        errors.append(f"after the drain: processed {info['processed']} != {len(stored)} stored")
    stored_ids = {m["message_id"] for m in stored} - {barrier}
    delivered_ids = {d.message_id for d in ledger.deliveries}
    if stored_ids - delivered_ids:
        errors.append(
            f"after the drain: {len(stored_ids - delivered_ids)} stored messages never delivered"
        )
    # A message is pushed before its batch commits: a kill may then lose it, but
    # only if its publish was never confirmed (checked as a loss otherwise).
    gone = delivered_ids - stored_ids
    confirmed_ids = {s.message_id for s in ledger.sent.values() if s.confirmed_seq is not None}
    if gone & confirmed_ids:
        errors.append(f"after the drain: {len(gone & confirmed_ids)} confirmed messages not stored")
    ledger.delivered_uncommitted = len(gone)


# -- the checker ----------------------------------------------------------------------------


@dataclass
class CrashReport:
    """What the checker found; ``ok`` when every promise held."""

    runs: int = 0
    restarts: int = 0
    startup_kills: int = 0
    seed: int = 0
    sent: int = 0
    confirmed: int = 0
    confirmed_ws: int = 0
    confirmed_rest: int = 0
    unconfirmed: int = 0
    unconfirmed_stored: int = 0
    deliveries: int = 0
    messages_delivered: int = 0
    lost: int = 0
    phantoms: int = 0
    ids_reused: int = 0
    duplicates: int = 0
    duplicate_causes: dict[str, int] = field(default_factory=dict)
    ack_refused: int = 0
    delivered_uncommitted: int = 0
    violations: list[str] = field(default_factory=list)
    count_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.phantoms or self.violations or self.count_errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if not name.startswith("_")
        } | {"ok": self.ok}

    def lines(self) -> list[str]:
        rows = [
            ("runs (kill -9 under load)", f"{self.runs:,}"),
            ("kills during start-up", f"{self.startup_kills:,}"),
            ("messages confirmed", f"{self.confirmed:,}"),
            ("  over WebSocket / REST", f"{self.confirmed_ws:,} / {self.confirmed_rest:,}"),
            ("publishes unconfirmed (killed)", f"{self.unconfirmed:,}"),
            ("  of which stored anyway", f"{self.unconfirmed_stored:,}"),
            ("deliveries", f"{self.deliveries:,}"),
            ("  of unconfirmed, uncommitted messages", f"{self.delivered_uncommitted:,}"),
            ("lost (must be 0)", f"{self.lost:,}"),
            ("phantoms (must be 0)", f"{self.phantoms:,}"),
            ("message ids reused (must be 0)", f"{self.ids_reused:,}"),
            ("duplicates", f"{self.duplicates:,}"),
            *((f"  {cause}", f"{n:,}") for cause, n in sorted(self.duplicate_causes.items())),
            ("violations (must be 0)", f"{len(self.violations):,}"),
            ("count mismatches (must be 0)", f"{len(self.count_errors):,}"),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        width = max(len(name) for name, _ in rows)
        out = [f"crash harness: seed {self.seed}, {'OK' if self.ok else 'FAILED'}"]
        out += [f"  {name.ljust(width)}  {value:>15}" for name, value in rows]
        out += [f"  violation: {v}" for v in self.violations[:20]]
        out += [f"  count mismatch: {e}" for e in self.count_errors[:20]]
        return out


def check(ledger: Ledger) -> CrashReport:
    """Check the promises over everything the ledger recorded (see the module docstring)."""
    report = CrashReport()
    sent = ledger.sent
    report.sent = len(sent)
    confirmed = {k: s for k, s in sent.items() if s.confirmed_seq is not None}
    report.confirmed = len(confirmed)
    report.confirmed_ws = sum(1 for s in confirmed.values() if s.via == "ws")
    report.confirmed_rest = report.confirmed - report.confirmed_ws
    report.deliveries = len(ledger.deliveries)
    report.ack_refused = ledger.ack_refused
    report.delivered_uncommitted = ledger.delivered_uncommitted
    report.count_errors = list(ledger.count_errors)
    violations = report.violations

    by_message: dict[tuple[int, str | None], list[Delivery]] = {}
    ids_of_key: dict[str, set[int]] = {}
    keys_of_id: dict[int, set[str | None]] = {}
    for delivery in ledger.deliveries:
        by_message.setdefault((delivery.message_id, delivery.key), []).append(delivery)
        keys_of_id.setdefault(delivery.message_id, set()).add(delivery.key)
        if delivery.key is None or delivery.key not in sent:
            report.phantoms += 1
            violations.append(f"message {delivery.message_id} was never published")
            continue
        ids_of_key.setdefault(delivery.key, set()).add(delivery.message_id)
    report.messages_delivered = len(by_message)
    for message_id, keys in keys_of_id.items():
        if len(keys) > 1:
            # A consumer that deduplicates by id would drop all but the first of them.
            report.ids_reused += 1
            violations.append(f"message id {message_id} named {len(keys)} messages: {keys}")
    for key, ids in ids_of_key.items():
        expected = sent[key].message_id
        if len(ids) > 1 or (expected is not None and ids != {expected}):
            report.phantoms += 1
            violations.append(f"publish {key} (confirmed as {expected}) delivered as ids {ids}")
    report.lost = sum(1 for key in confirmed if key not in ids_of_key)
    report.unconfirmed = report.sent - report.confirmed
    report.unconfirmed_stored = sum(
        1 for key in ids_of_key if sent[key].confirmed_seq is None
    )  # fmt: skip
    for key in confirmed:
        if key not in ids_of_key and len(violations) < 1000:
            violations.append(f"confirmed publish {key} ({sent[key].message_id}) was lost")

    per_run, per_conn = _durable_marks(ledger)
    causes: Counter[str] = Counter()
    for (message_id, _), deliveries in by_message.items():
        for previous, current in itertools.pairwise(deliveries):
            report.duplicates += 1
            if previous.nacked:
                cause = "nacked (requeued)"
            elif previous.ack_seq is None:
                cause = "unacked when killed" if previous.run < current.run else ""
            elif _ack_committed(previous, per_run, per_conn):
                cause = ""
                violations.append(
                    f"message {message_id} delivered again after its ack was committed"
                )
            elif previous.ack_run is not None and previous.ack_run < current.run:
                cause = "ack lost in the crash"
            else:
                cause = ""
                violations.append(f"message {message_id} delivered again after its ack")
            if not cause:
                cause = "without a cause (violation)"
                if previous.ack_seq is None:
                    violations.append(
                        f"message {message_id} delivered again within run {current.run} "
                        "without a nack"
                    )
            causes[cause] += 1
            if not current.redelivered:
                violations.append(
                    f"message {message_id} delivered again without the redelivered mark "
                    f"({_describe(previous)} then {_describe(current)})"
                )
    report.duplicate_causes = dict(causes)
    return report


def _describe(delivery: Delivery) -> str:
    settled = (
        "nacked" if delivery.nacked else "acked" if delivery.ack_seq is not None else "unacked"
    )
    return (
        f"{delivery.via} run {delivery.run} attempt {delivery.attempt}"
        f"{' redelivered' if delivery.redelivered else ''} {settled}"
    )


async def run_crash(config: CrashConfig) -> CrashReport:
    """Run the harness: ``config.runs`` kills under load, a drain, then the checker."""
    if config.seed is None:
        config.seed = random.randrange(1 << 30)
    rng = random.Random(config.seed)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        data_dir = config.data_dir
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crash-")))
        broker = BrokerProcess(
            data_dir / "broker",
            free_port(),
            BROKER_SQLITE_SYNCHRONOUS=config.synchronous,
            BROKER_PROCESSED_RETENTION_S=str(30 * 24 * 3600),
            BROKER_PROCESSED_RETENTION_COUNT=str(1 << 40),
        )
        ledger = Ledger()
        startup_kills = 0
        try:
            await broker.start()
            token = await _token(broker.url)
            async with httpx.AsyncClient(
                base_url=broker.url, headers={"Authorization": f"Bearer {token}"}
            ) as http:
                (await http.post("/queues", json={"name": QUEUE})).raise_for_status()
            processed = 0
            for run in range(1, config.runs + 1):
                await _run_load(broker, ledger, run, config)
                if startup_kills < config.startup_kills and rng.random() < 0.5 + (
                    run == config.runs
                ):
                    # Kill it again while it starts: recovery itself must be crash-safe.
                    broker.spawn()
                    await asyncio.sleep(rng.uniform(0.05, 1.5))
                    broker.kill()
                    startup_kills += 1
                await broker.start()
                processed = await _check_restart(broker.url, ledger, run, processed)
            await _drain(broker.url, ledger, config.runs + 1)
        finally:
            broker.terminate()
    report = check(ledger)
    report.runs = config.runs
    report.restarts = broker.starts
    report.startup_kills = startup_kills
    report.seed = config.seed
    report.seconds = time.monotonic() - started
    return report


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crash", description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="kills under load (default 10)")
    parser.add_argument("--messages", type=int, default=5000, help="most publishes per run")
    parser.add_argument("--rate", type=float, default=1500.0, help="publishes per second")
    parser.add_argument("--min-s", type=float, default=0.3, help="earliest kill after load starts")
    parser.add_argument("--max-s", type=float, default=2.0, help="latest kill after load starts")
    parser.add_argument("--startup-kills", type=int, default=1, help="kills during start-up")
    parser.add_argument("--seed", type=int, help="random seed (to replay a failure)")
    parser.add_argument("--synchronous", default="NORMAL", choices=("NORMAL", "FULL"))
    parser.add_argument("--data-dir", type=Path, help="keep the broker's data here")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.messages < 1 or args.rate <= 0 or not 0 < args.min_s <= args.max_s:
        parser.error("--runs, --messages, --rate must be positive and --min-s <= --max-s")
    from loguru import logger

    logger.disable("transports.client")
    # Writes racing the kill reach a dead socket and asyncio warns about each: expected here.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    config = CrashConfig(
        runs=args.runs,
        messages=args.messages,
        rate=args.rate,
        min_s=args.min_s,
        max_s=args.max_s,
        startup_kills=args.startup_kills,
        seed=args.seed,
        synchronous=args.synchronous,
        data_dir=args.data_dir,
    )
    report = asyncio.run(run_crash(config))
    print("\n".join(report.lines()))
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

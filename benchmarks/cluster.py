"""Cluster mode: end-to-end throughput and latency with 1, 2 and 3 nodes on one PostgreSQL.

Run: ``python -m benchmarks.cluster [--messages N] [--runs R] [--quick]
[--configs KEY ...] [--baseline TREE] [--out benchmarks/results/cluster.json]``
(needs the ``bench`` and ``postgres`` extras and a PostgreSQL on
127.0.0.1:5432 with trust auth for ``postgres``; the ``test`` database is
the admin connection).

Configurations, in one run:

* ``sqlite``: one node on the SQLite default (the baseline);
* ``pg1``, ``pg2``, ``pg3``: 1, 2 and 3 nodes (``python -m transports serve``,
  each with its own port, data dir and ``BROKER_NODE_NAME``) sharing one
  throwaway database ``broker_bench_<random>``, recreated empty for every
  cluster start and dropped at the end. One admin token, from node 1,
  is used on every node (the JWT secret lives in the database).

Per configuration and run:

* **throughput**: one queue; one producer process per node publishing over
  WebSocket with confirms (our client, 1 KiB messages, 500 in flight in
  all) and one consumer process per node acking each message (a prefetch
  of 500 in all); ``--messages`` in all (20,000; ``--quick`` 3,000).
  Messages / (the last message's first ack - the first publish). Every
  message carries a sequence number, so delivery is checked by the
  consumers, not by the broker's ids: missing and duplicate deliveries are
  counted.
* **latency**: 500 msg/s for 5 s (``--quick`` 2 s) published on node 1 and
  consumed on the last node (with 2-3 nodes the message crosses nodes):
  publish-to-deliver (the send time is stamped in the body) and
  publish-to-confirm p50 / p99 / max.

Each phase also records the CPU seconds of the broker nodes, of every
``postgres`` process (backends, WAL writer, ...; a backend that exits
within the phase is not counted) and of the clients, and how busy the
whole machine was: on 2 cores this says what limits the figure. The
configurations are interleaved run by run (like the suite), each run on a
fresh cluster. With ``--baseline TREE`` (another checkout, e.g. ``git
archive main | tar -x -C TREE``) every configuration also runs its nodes
from that tree (``KEY-base``), interleaved with this one's: a before/after
comparison in one run. Every figure is the median of ``--runs`` runs (3; ``--quick``
1) with its min-max.

Every wait has a deadline: a phase that stalls (no new message for
``STALL_S`` seconds) or a cluster that does not start fails with its
reason, and the run goes on. The JSON (``--out``) is rewritten after every
phase, so an interrupted run keeps what it measured; a PNG beside it shows
the throughput and the p99 latencies. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import psutil

from .harness import (
    RESULTS,
    BrokerProcess,
    WorkerError,
    Workers,
    attempt,
    code_state,
    cpu_seconds,
    load_average,
    raise_open_files,
    save,
    say,
)
from .ours import _clients, _close
from .phases import queue_names
from .report import median_of, number
from .stats import percentiles, summarise
from .worker import Spec, wait_for_stop
from .workload import Plan, body

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from .harness import Worker

__all__ = ["CLUSTER_PLAN", "CONFIGS", "ROLES", "Config", "consume", "main", "produce"]

MODULE = "benchmarks.cluster"
"""This module, as the client processes import it (``__name__`` is ``__main__`` here)."""
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
"""An existing database to connect to while creating and dropping the throwaway one."""
STALL_S = 20.0
"""A phase fails when no new message arrived for this long."""
READY_TIMEOUT = 60.0
VISIBLE_TIMEOUT = 10.0
"""How long a queue made on node 1 may take to show on the other nodes."""


class Config(msgspec.Struct, frozen=True):
    """One configuration under test."""

    key: str
    label: str
    postgres: bool
    nodes: int
    tree: str | None = None
    """Run the nodes from this source tree (``PYTHONPATH``) instead of this one: a before/after
    comparison in one run (``--baseline``)."""


CONFIGS = (
    Config("sqlite", "SQLite, 1 node", postgres=False, nodes=1),
    Config("pg1", "PostgreSQL, 1 node", postgres=True, nodes=1),
    Config("pg2", "PostgreSQL, 2 nodes", postgres=True, nodes=2),
    Config("pg3", "PostgreSQL, 3 nodes", postgres=True, nodes=3),
)


CLUSTER_PLAN = Plan(count=20_000, rate=500.0, duration=5.0)
"""The sizes of one run: the suite's window and prefetch, fewer messages, a slower latency phase."""
QUICK_PLAN = Plan(count=3_000, runs=1, rate=500.0, duration=2.0)
"""``--quick``: small enough to debug with."""
_PLAN_FIELDS = ("count", "runs", "window", "prefetch", "rate", "duration")
"""What of the `Plan` a cluster run uses (and saves)."""


# -- the client roles (run by `benchmarks.worker`, one process each) ---------------------


class _Body(msgspec.Struct):
    t: float
    seq: int


_decode_body = msgspec.json.Decoder(_Body).decode


async def produce(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Publish ``count`` messages numbered from ``endpoint["first_seq"]``, ``window`` in flight.

    It connects, says ready, and starts on the coordinator's "go" (a line on
    stdin), so the producers of all nodes start together; when done it waits
    for a second line before it closes, so that it is still there when the
    coordinator reads its CPU time at the end of the phase.
    """
    (client,) = _clients(spec, 1, window=spec.window)
    # Spec has no field for it; the producers of one run share the numbers
    # 0..N-1 so that the consumers can tell every message apart.
    first = int(spec.endpoint.get("first_seq", 0))
    try:
        await client.connect()
        ready()
        await wait_for_stop()
        started = time.monotonic()
        await client.publish_many(
            spec.queues[0],
            (msgspec.Raw(body(seq)) for seq in range(first, first + spec.count)),
            window=spec.window,
        )
        finished = time.monotonic()
        await wait_for_stop()
        return {"published": spec.count, "started": started, "finished": finished}
    finally:
        await _close([client])


async def consume(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Subscribe to the queue with ``prefetch``; ack each message until stopped.

    ``count`` is how many sequence numbers the run has. The set of numbers
    seen goes to ``<out>.progress`` (a bitmap) 20 times a second: the
    coordinator ORs the consumers' bitmaps to know when every message
    arrived, without trusting the broker's own counts. Returned: for each
    number first seen here, its number and the time it was acked; with a
    ``rate``, the publish-to-deliver latency of each.
    """
    (client,) = _clients(spec, 1)
    sub = client.subscribe(spec.queues[0], spec.prefetch)
    seen = bytearray((spec.count + 7) // 8)
    progress = Path(spec.out + ".progress")
    seqs: list[int] = []
    acked: list[float] = []
    deliver: list[float] = []
    received = redelivered = foreign = 0
    measure = spec.rate > 0

    def report() -> None:
        # Written whole and renamed: the coordinator never reads half a bitmap.
        partial_path = progress.with_suffix(".tmp")
        partial_path.write_bytes(seen)
        os.replace(partial_path, progress)

    async def reporter() -> None:
        while True:
            report()
            await asyncio.sleep(0.05)

    async def drain() -> None:
        nonlocal received, redelivered, foreign
        async for message in sub:
            now = time.monotonic()
            stamp = _decode_body(message.raw)
            await message.ack()
            received += 1
            redelivered += message.redelivered
            seq = stamp.seq
            if not 0 <= seq < spec.count:
                foreign += 1  # not this run's: a leftover would show here
                continue
            byte, bit = divmod(seq, 8)
            if seen[byte] & (1 << bit):
                continue  # a duplicate: counted by the coordinator from `received`
            seen[byte] |= 1 << bit
            seqs.append(seq)
            acked.append(time.monotonic())
            if measure:
                deliver.append(now - stamp.t)

    tasks: list[asyncio.Task[None]] = []
    try:
        await sub.start()
        tasks = [asyncio.ensure_future(drain()), asyncio.ensure_future(reporter())]
        ready()
        await wait_for_stop()
        await client.flush()
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        report()
        await _close([client])
    # The subscription ending early (a lost connection) is the run's failure.
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
    return {
        "received": received,
        "redelivered": redelivered,
        "foreign": foreign,
        "seqs": seqs,
        "acked": acked,
        "deliver": deliver,
    }


ROLES = {"produce": produce, "consume": consume}


# -- the coordinator's side -----------------------------------------------------------


class PhaseError(RuntimeError):
    """A phase stalled, timed out, or lost messages on the way."""


async def _admin(sql: str, url: str = ADMIN_URL) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


class Scratch:
    """The run's throwaway PostgreSQL database: ``broker_bench_<random>``.

    `fresh` drops and recreates it empty (every cluster starts on an empty
    database, so no run inherits the dead rows of the one before); `drop`
    removes it for good.
    """

    def __init__(self, admin_url: str = ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.name = f"broker_bench_{secrets.token_hex(6)}"
        parts = urlsplit(admin_url)
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def version(self) -> str:
        return str(asyncio.run(_admin("SELECT version()", self.admin_url)))

    def fresh(self) -> None:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', self.admin_url))
        asyncio.run(_admin(f'CREATE DATABASE "{self.name}"', self.admin_url))

    def drop(self) -> None:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', self.admin_url))


class Cluster:
    """The nodes of one configuration, started in order (node 1 sets the schema up)."""

    def __init__(self, config: Config, storage_url: str | None, trace: bool = False) -> None:
        self.config = config
        self.storage_url = storage_url
        self.trace = trace
        self.database = urlsplit(storage_url).path.lstrip("/") if storage_url else None
        self.nodes: list[BrokerProcess] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Cluster:
        try:
            for index in range(self.config.nodes):
                env = {}
                if self.storage_url is not None:
                    name = f"n{index + 1}"
                    env = {"BROKER_STORAGE_URL": self.storage_url, "BROKER_NODE_NAME": name}
                    if self.trace:
                        env |= _trace_env()
                node = BrokerProcess(self.config.tree, **env)
                try:
                    self._stack.enter_context(node)
                except TimeoutError as exc:
                    # The broker's own last words say why (database in use, ...).
                    raise PhaseError(f"node n{index + 1} did not start: {exc}") from None
                self.nodes.append(node)
            self._check_token()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def token(self) -> str:
        return self.nodes[0].token()

    def endpoint(self, index: int) -> dict[str, Any]:
        return {"url": self.nodes[index].url, "token": self.token()}

    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    def _get(self, index: int, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.get(f"{self.nodes[index].url}{path}", headers=headers, timeout=10)

    def _check_token(self) -> None:
        """Every node accepts node 1's token (the cluster shares its JWT secret)."""
        for index in range(1, len(self.nodes)):
            response = self._get(index, "/queues")
            if response.status_code != 200:
                raise PhaseError(
                    f"node n{index + 1} refused node n1's token: "
                    f"{response.status_code} {response.text[:200]}"
                )

    def create(self, queue: str) -> None:
        """Make ``queue`` on node 1; wait until every other node knows it."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        httpx.post(
            f"{self.nodes[0].url}/queues", json={"name": queue}, headers=headers, timeout=30
        ).raise_for_status()
        for index in range(1, len(self.nodes)):
            deadline = time.monotonic() + VISIBLE_TIMEOUT
            while self._get(index, f"/queues/{queue}").status_code != 200:
                if time.monotonic() > deadline:
                    raise PhaseError(
                        f"queue {queue} made on n1 is not on n{index + 1} "
                        f"after {VISIBLE_TIMEOUT:g} s"
                    )
                time.sleep(0.05)

    def delete(self, queue: str) -> None:
        headers = {"Authorization": f"Bearer {self.token()}"}
        with contextlib.suppress(httpx.HTTPError):
            httpx.delete(f"{self.nodes[0].url}/queues/{queue}", headers=headers, timeout=30)


def _postgres_cpu(database: str | None = None) -> dict[int, float]:
    """CPU seconds of every ``postgres`` process now, by pid (``database``'s backends only).

    A backend's title names its database (``postgres: 15/main: user db host
    state``): on a machine shared with other users of the server, the
    backends of the run's throwaway database are what the broker costs.
    """
    out: dict[int, float] = {}
    for process in psutil.process_iter(["name", "cpu_times", "cmdline"]):
        times = process.info.get("cpu_times")
        if process.info.get("name") != "postgres" or times is None:
            continue
        if database is not None and f" {database} " not in " ".join(process.info["cmdline"] or ()):
            continue
        out[process.pid] = float(times.user + times.system)
    return out


def _busy(times: Any) -> float:
    """CPU seconds the machine's cores were not idle (guest time is inside user already)."""
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in fields))


class CpuMeter:
    """The CPU the brokers, PostgreSQL, the clients and the whole machine use from now on.

    ``clients`` are client processes already running (their connection
    setup is then not counted).
    """

    def __init__(
        self,
        broker_pids: Sequence[int],
        postgres: bool,
        clients: Sequence[int] = (),
        database: str | None = None,
    ) -> None:
        self.pids = list(broker_pids)
        self.clients = list(clients)
        self.postgres = postgres
        self.database = database
        self.wall = time.monotonic()
        self.machine = psutil.cpu_times()
        self.brokers = [cpu_seconds(pid) for pid in self.pids]
        self.client_start = [cpu_seconds(pid) for pid in self.clients]
        self.pg = _postgres_cpu() if postgres else {}
        self.statements = _statements(self.pids) if postgres else {}

    @staticmethod
    def _since(pids: Sequence[int], start: Sequence[float | None]) -> list[float | None]:
        # A process that ended since reads None: its CPU is unknown, not 0
        # (hence the producers wait to be released before they exit).
        return [
            None if before is None or after is None else round(after - before, 3)
            for before, after in zip(start, map(cpu_seconds, pids), strict=True)
        ]

    def used(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall
        busy = _busy(psutil.cpu_times()) - _busy(self.machine)
        brokers = self._since(self.pids, self.brokers)
        out: dict[str, Any] = {
            "wall_s": round(wall, 3),
            "broker_cpu_s": round(sum(value or 0.0 for value in brokers), 3),
            "broker_cpu_s_per_node": brokers,
            "machine_busy_pct": round(100 * busy / (wall * (os.cpu_count() or 1)), 1),
        }
        if self.clients:
            clients = self._since(self.clients, self.client_start)
            out["clients_cpu_s"] = round(sum(value or 0.0 for value in clients), 3)
            out["clients_unread"] = clients.count(None)
        if self.postgres:
            # A backend born within the phase counts from zero.
            after = _postgres_cpu()
            out["postgres_all_cpu_s"] = round(
                sum(cpu - self.pg.get(pid, 0.0) for pid, cpu in after.items()), 3
            )
            if self.database is not None:
                # The run's own backends (the whole server serves other users too).
                ours = _postgres_cpu(self.database)
                out["postgres_cpu_s"] = round(
                    sum(cpu - self.pg.get(pid, 0.0) for pid, cpu in ours.items()), 3
                )
            else:
                out["postgres_cpu_s"] = out["postgres_all_cpu_s"]
            if self.statements:
                now = _statements(self.pids)
                out["statements"] = {
                    key: count - self.statements.get(key, 0)
                    for key, count in now.items()
                    if count != self.statements.get(key, 0)
                }
        return out


TRACE_DIR = Path(__file__).parent / "pg_trace"
"""The ``sitecustomize`` that counts a node's statements (``--trace``)."""
_TRACE_PREFIX = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-pg-trace-{os.getpid()}"


def _trace_env() -> dict[str, str]:
    """The environment that makes a node count its statements into `_TRACE_PREFIX`."""
    path = os.environ.get("PYTHONPATH")
    return {
        "PYTHONPATH": f"{TRACE_DIR}{os.pathsep}{path}" if path else str(TRACE_DIR),
        "BENCH_PG_TRACE": str(_TRACE_PREFIX),
    }


def _statements(pids: Sequence[int]) -> dict[str, int]:
    """The statements the nodes ``pids`` sent so far, by SQL's first words (``--trace``)."""
    total: dict[str, int] = {}
    for pid in pids:
        try:
            counts = msgspec.json.decode(Path(f"{_TRACE_PREFIX}.{pid}.json").read_bytes())
        except (OSError, msgspec.DecodeError):
            continue
        for key, count in counts.items():
            total[key] = total.get(key, 0) + count
    return total


def _bitmap(worker: Worker) -> int:
    """The sequence numbers a consumer has seen so far, as an int bitmap."""
    try:
        return int.from_bytes(Path(worker.spec.out + ".progress").read_bytes(), "little")
    except OSError:
        return 0


def _check_alive(workers: Sequence[Worker]) -> None:
    """Raise the failure of a worker that ended before it was told to."""
    for worker in workers:
        if worker.process.poll() is not None and worker.process.returncode != 0:
            worker.result(timeout=5)  # raises WorkerError with its log tail


def _await_delivery(
    consumers: Sequence[Worker],
    producers: Sequence[Worker],
    total: int,
    deadline: float,
) -> None:
    """Wait until the consumers saw all ``total`` numbers.

    Raises:
        PhaseError: no new number for `STALL_S`, or ``deadline`` passed.
        WorkerError: a client process failed.
    """
    seen, changed = 0, time.monotonic()
    while True:
        _check_alive([*consumers, *producers])
        bitmap = 0
        for consumer in consumers:
            bitmap |= _bitmap(consumer)
        count = bitmap.bit_count()
        now = time.monotonic()
        # All delivered means all published: the producers' exit (confirms,
        # shutdown) is awaited by the caller, outside the measured window.
        if count >= total:
            return
        if count != seen:
            seen, changed = count, now
        published = all(worker.process.poll() is not None for worker in producers)
        state = "producers done" if published else "producers still publishing"
        if now - changed > STALL_S:
            raise PhaseError(
                f"stalled: {count:,}/{total:,} delivered, none new for {STALL_S:g} s ({state})"
            )
        if now > deadline:
            raise PhaseError(f"timed out: {count:,}/{total:,} delivered ({state})")
        time.sleep(0.05)


def _stop_all(consumers: Sequence[Worker]) -> list[dict[str, Any]]:
    for consumer in consumers:
        consumer.stop()
    return [consumer.result(timeout=30) for consumer in consumers]


def _deliveries(consumed: Sequence[dict[str, Any]], total: int) -> dict[str, Any]:
    """Merge the consumers' first deliveries: when each number first arrived, and the losses."""
    first: dict[int, float] = {}
    for result in consumed:
        for seq, at in zip(result["seqs"], result["acked"], strict=True):
            if seq not in first or at < first[seq]:
                first[seq] = at
    received = sum(result["received"] for result in consumed)
    return {
        "received": received,
        "unique": len(first),
        "missing": total - len(first),
        "duplicates": received - len(first) - sum(result["foreign"] for result in consumed),
        "redelivered": sum(result["redelivered"] for result in consumed),
        "per_node_received": [result["received"] for result in consumed],
        "completed": max(first.values(), default=0.0),
    }


def _how_far(consumers: Sequence[Worker], total: int) -> str:
    """What a failed phase's consumers got: messages received, duplicates, per node."""
    try:
        got = _deliveries(_stop_all(consumers), total)
    except Exception as exc:  # the phase already failed: this is only its detail
        return f"; the consumers' results are lost too ({type(exc).__name__})"
    return (
        f"; received {got['received']:,} ({got['duplicates']:,} duplicates), "
        f"per consumer {got['per_node_received']}"
    )


def throughput(cluster: Cluster, plan: Plan, queue: str) -> dict[str, Any]:
    """One throughput run: a producer and a consumer per node on one queue."""
    nodes = len(cluster.nodes)
    # Generous (a floor of 250 msg/s) but bounded; stalls end a run much sooner.
    timeout = plan.timeout(floor_per_s=250.0)
    deadline = time.monotonic() + timeout
    # The suite's window and prefetch, spread over the nodes: more nodes get
    # the same credit in all, so the figure measures the nodes, not the credit.
    window, prefetch = max(1, plan.window // nodes), max(10, plan.prefetch // nodes)
    shares = [len(range(index, plan.count, nodes)) for index in range(nodes)]
    cluster.create(queue)
    try:
        with Workers() as workers:
            consumers = [
                workers.start(
                    Spec(
                        module=MODULE,
                        role="consume",
                        endpoint=cluster.endpoint(index),
                        queues=[queue],
                        count=plan.count,
                        prefetch=prefetch,
                        until_stop=True,
                        timeout=timeout,
                    )
                )
                for index in range(nodes)
            ]
            for consumer in consumers:
                consumer.wait_ready(READY_TIMEOUT)
            producers = [
                workers.start(
                    Spec(
                        module=MODULE,
                        role="produce",
                        endpoint={**cluster.endpoint(index), "first_seq": sum(shares[:index])},
                        queues=[queue],
                        count=shares[index],
                        window=window,
                        timeout=timeout,
                    )
                )
                for index in range(nodes)
            ]
            for producer in producers:
                producer.wait_ready(READY_TIMEOUT)
            cpu = CpuMeter(
                cluster.pids(),
                cluster.config.postgres,
                [worker.process.pid for worker in (*consumers, *producers)],
                cluster.database,
            )
            for producer in producers:
                producer.stop()  # "go"
            try:
                _await_delivery(consumers, producers, plan.count, deadline)
            except PhaseError as exc:
                raise PhaseError(f"{exc}{_how_far(consumers, plan.count)}") from None
            used = cpu.used()
            for producer in producers:
                producer.stop()  # done: close and report
            produced = [producer.result(timeout=30) for producer in producers]
            consumed = _stop_all(consumers)
    finally:
        cluster.delete(queue)
    got = _deliveries(consumed, plan.count)
    started = min(result["started"] for result in produced)
    elapsed = got.pop("completed") - started
    per_message = {
        f"{key.removesuffix('_s')}_us_per_msg": round(1e6 * used[key] / plan.count, 1)
        for key in ("broker_cpu_s", "postgres_cpu_s", "postgres_all_cpu_s", "clients_cpu_s")
        if key in used
    }
    per_message |= _statements_per_message(used, plan.count)
    return {
        "msgs_per_s": plan.count / elapsed,
        "seconds": elapsed,
        "publish_msgs_per_s": plan.count
        / (max(result["finished"] for result in produced) - started),
        **got,
        **used,
        **per_message,
    }


def _statements_per_message(used: dict[str, Any], count: int) -> dict[str, float]:
    """Statements (rows of an ``executemany`` each) and round trips per message (``--trace``)."""
    counted = used.get("statements")
    if not counted:
        return {}
    calls = counted.get("_calls", 0)
    statements = sum(n for key, n in counted.items() if key != "_calls")
    return {
        "statements_per_msg": round(statements / count, 3),
        "round_trips_per_msg": round(calls / count, 3),
    }


def latency(cluster: Cluster, plan: Plan, queue: str) -> dict[str, Any]:
    """One latency run: ``rate`` msg/s published on node 1, consumed on the last node."""
    total = round(plan.rate * plan.duration)
    timeout = plan.duration + 60.0
    deadline = time.monotonic() + timeout
    cluster.create(queue)
    try:
        with Workers() as workers:
            consumer = workers.start(
                Spec(
                    module=MODULE,
                    role="consume",
                    endpoint=cluster.endpoint(len(cluster.nodes) - 1),
                    queues=[queue],
                    count=total,
                    prefetch=plan.prefetch,
                    rate=plan.rate,
                    until_stop=True,
                    timeout=timeout,
                )
            )
            consumer.wait_ready(READY_TIMEOUT)
            cpu = CpuMeter(cluster.pids(), cluster.config.postgres, (), cluster.database)
            # The suite's paced producer: one `Client.publish` per message on
            # schedule, each confirm timed; its numbers are 0..total-1.
            producer = workers.start(
                Spec(
                    module="benchmarks.ours",
                    role="produce",
                    endpoint=cluster.endpoint(0),
                    queues=[queue],
                    rate=plan.rate,
                    duration=plan.duration,
                    timeout=timeout,
                )
            )
            try:
                _await_delivery([consumer], [producer], total, deadline)
            except PhaseError as exc:
                raise PhaseError(f"{exc}{_how_far([consumer], total)}") from None
            used = cpu.used()
            produced = producer.result(timeout=30)
            (consumed,) = _stop_all([consumer])
    finally:
        cluster.delete(queue)
    got = _deliveries([consumed], total)
    got.pop("completed")
    got.pop("per_node_received")
    deliver, confirm = percentiles(consumed["deliver"]), percentiles(produced["confirm"])
    return {
        "achieved_rate": produced["achieved_rate"],
        **got,
        **{f"deliver_{key}": value for key, value in deliver.items()},
        **{f"confirm_{key}": value for key, value in confirm.items()},
        **used,
        **_statements_per_message(used, total),
        "postgres_cpu_us_per_msg": round(1e6 * used.get("postgres_cpu_s", 0.0) / total, 1),
        "broker_cpu_us_per_msg": round(1e6 * used["broker_cpu_s"] / total, 1),
        # The paced producer starts after the meter: the roles' own CPU, as in the suite.
        "clients_cpu_s": round(produced["cpu_s"] + consumed["cpu_s"], 3),
    }


# -- the run --------------------------------------------------------------------------


def _describe_throughput(result: dict[str, Any], plan: Plan) -> str:
    return (
        f"{result['msgs_per_s']:,.0f} msg/s, "
        f"{result['unique']:,}/{plan.count:,} delivered, "
        f"{result['duplicates']} duplicates, per consumer "
        f"{result['per_node_received']}; CPU s brokers "
        f"{result['broker_cpu_s']:.1f}, postgres "
        f"{result.get('postgres_cpu_s', 0):.1f}, clients "
        f"{result['clients_cpu_s']:.1f}; machine {result['machine_busy_pct']}% busy"
        + _describe_statements(result)
    )


def _describe_statements(result: dict[str, Any]) -> str:
    if "statements_per_msg" not in result:
        return ""
    return (
        f"; per message: postgres {result.get('postgres_cpu_us_per_msg', 0):.0f} µs, "
        f"{result['statements_per_msg']:.2f} statements, "
        f"{result['round_trips_per_msg']:.2f} round trips"
    )


def _describe_latency(result: dict[str, Any], plan: Plan) -> str:
    return (
        f"deliver p50 {result['deliver_p50_ms']:.2f} "
        f"p99 {result['deliver_p99_ms']:.2f} max {result['deliver_max_ms']:.2f} ms"
        f", confirm p50 {result['confirm_p50_ms']:.2f} "
        f"p99 {result['confirm_p99_ms']:.2f} ms, missing {result['missing']}"
        + _describe_statements(result)
    )


_Measure: TypeAlias = "Callable[[Cluster, Plan, str], dict[str, Any]]"
_Describe: TypeAlias = "Callable[[dict[str, Any], Plan], str]"
_Phase: TypeAlias = "tuple[str, _Measure, _Describe]"
_PHASES: tuple[_Phase, ...] = (
    ("throughput", throughput, _describe_throughput),
    ("latency", latency, _describe_latency),
)
"""Each run's phases: name (and key in the results), measurement, one-line summary."""


class Run:
    """One run of the benchmark: the configurations, their runs, and the document."""

    def __init__(
        self, plan: Plan, configs: Sequence[Config], out: Path, trace: bool = False
    ) -> None:
        self.plan = plan
        self.trace = trace
        self.configs = list(configs)
        self.out = out
        self.scratch: Scratch | None = None
        self.errors: dict[str, str] = {}
        self.runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            config.key: {"throughput": [], "latency": []} for config in self.configs
        }
        self.info: dict[str, Any] = {
            "plan": {field: getattr(plan, field) for field in _PLAN_FIELDS},
            "configs": [msgspec.to_builtins(config) for config in self.configs],
            "code": code_state(),
            "load": {"start": load_average(), "phases": {}},
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def attempt(self, label: str, work: Callable[[], Any]) -> Any:
        """Run ``work``; on failure record why under ``label`` and return None."""
        return attempt(self.errors, label, work, (PhaseError, WorkerError))

    def document(self) -> dict[str, Any]:
        results = {
            config.key: {
                "label": config.label,
                "nodes": config.nodes,
                "storage": "postgresql" if config.postgres else "sqlite",
                **{phase: summarise(runs) for phase, runs in self.runs[config.key].items() if runs},
            }
            for config in self.configs
        }
        # The runs themselves too (small: no per-message lists), for what medians hide.
        return {**self.info, "configurations": results, "runs": self.runs, "errors": self.errors}

    def save(self) -> Path:
        self.info["load"]["end"] = load_average()
        self.info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return save(self.out.stem, self.document(), self.out.parent)

    def _postgres(self) -> Scratch | None:
        if self.scratch is not None:
            return self.scratch
        scratch = Scratch()
        try:
            self.info["postgres"] = scratch.version()
        except Exception as exc:
            reason = f"no PostgreSQL on {ADMIN_URL}: {type(exc).__name__}: {exc}"
            self.errors["postgres"] = reason
            say(f"  ! {reason}")
            return None
        self.scratch = scratch
        say(f"PostgreSQL: {self.info['postgres']}; database {scratch.name}")
        return scratch

    def one(self, config: Config, run: int) -> None:
        """Start ``config``'s cluster afresh, run its throughput and latency phases, stop it."""
        label = f"{config.key} run {run + 1}/{self.plan.runs}"
        self.info["load"]["phases"][label] = load_average()
        say(f"\n== {label}: {config.label} (load average {load_average()})")
        url = None
        if config.postgres:
            scratch = self._postgres()
            if scratch is None:
                self.errors[label] = "skipped: " + self.errors["postgres"]
                return
            try:
                scratch.fresh()
            except Exception as exc:
                self.errors[label] = f"fresh database: {type(exc).__name__}: {exc}"
                say(f"  ! {label}: {self.errors[label]}")
                return
            url = scratch.url

        def phases() -> None:
            with Cluster(config, url, self.trace) as cluster:
                cluster.token()  # log in now: the password hash is not what we measure
                for name, measure, describe in _PHASES:
                    queue = queue_names(f"cluster-{name}", run)[0]
                    result = self.attempt(
                        f"{label} {name}", partial(measure, cluster, self.plan, queue)
                    )
                    if result is not None:
                        self.runs[config.key][name].append(result)
                        say(f"  {name}: {describe(result, self.plan)}")
                    self.save()

        self.attempt(f"{label} cluster", phases)
        self.save()

    def run(self) -> None:
        try:
            for run in range(self.plan.runs):
                for config in self.configs:
                    self.one(config, run)
        finally:
            if self.scratch is not None:
                self.attempt("drop database", self.scratch.drop)


# -- the report -----------------------------------------------------------------------


def _rate(cell: Any) -> str:
    median = median_of(cell)
    if median is None:
        return "-"
    if len(cell.get("runs", [])) > 1:
        return f"{number(median)} ({number(cell['min'])}-{number(cell['max'])})"
    return number(median)


def table(document: dict[str, Any]) -> str:
    """One Markdown row per configuration (medians; min-max of the throughput).

    A run either delivered every message or failed (its reason is listed
    below the table), so the table counts complete runs and duplicates.
    """
    planned = document["plan"]["runs"]
    lines = [
        "| | end to end, msg/s | complete runs, duplicates | publish to deliver, ms "
        "p50 / p99 / max | publish to confirm, ms p50 / p99 / max | end to end, CPU µs per "
        "message: brokers / PostgreSQL / clients | machine busy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in document["configurations"].values():
        flow, lat = result.get("throughput", {}), result.get("latency", {})
        done = len(flow["msgs_per_s"]["runs"]) if flow else 0
        delivered = f"{done}/{planned}"
        cpu = busy = "-"
        if flow:
            delivered += f", {number(sum(flow['duplicates']['runs']))}"
            keys = ("broker_cpu_us_per_msg", "postgres_cpu_us_per_msg", "clients_cpu_us_per_msg")
            cpu = " / ".join(number(median_of(flow.get(key))) for key in keys)
            busy = f"{number(median_of(flow.get('machine_busy_pct')))}%"

        def latencies(kind: str, lat: dict[str, Any] = lat) -> str:
            if not lat:
                return "-"
            cell = " / ".join(
                number(median_of(lat.get(f"{kind}_{p}_ms")), 2) for p in ("p50", "p99", "max")
            )
            runs = len(lat[f"{kind}_p50_ms"]["runs"])
            return cell if runs == planned else f"{cell} ({runs}/{planned} runs)"

        lines.append(
            f"| {result['label']} | {_rate(flow.get('msgs_per_s'))} | {delivered} | "
            f"{latencies('deliver')} | {latencies('confirm')} | {cpu} | {busy} |"
        )
    return "\n".join(lines)


def draw(document: dict[str, Any], path: Path) -> Path | None:
    """Throughput bars (min-max whiskers) and p99 latencies per configuration."""
    configurations = document["configurations"]
    if not any("throughput" in r or "latency" in r for r in configurations.values()):
        return None
    # matplotlib only here: the client processes import this module too.
    import matplotlib.pyplot as plt

    from .plots import _COLORS, _bars

    blue, green, orange = _COLORS["wsbroker"], _COLORS["nats"], _COLORS["rabbitmq"]

    results = list(configurations.values())

    def cells(phase: str, key: str) -> list[Any]:
        return [result.get(phase, {}).get(key) for result in results]

    labels = [result["label"].replace(", ", "\n") for result in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    _bars(left, labels, {"end to end": cells("throughput", "msgs_per_s")}, {"end to end": blue})
    left.set_ylabel("messages / s (1 KiB, confirmed, acked)")
    left.set_title("Throughput: a producer and a consumer per node")
    _bars(
        right,
        labels,
        {
            "publish to deliver": cells("latency", "deliver_p99_ms"),
            "publish to confirm": cells("latency", "confirm_p99_ms"),
        },
        {"publish to deliver": green, "publish to confirm": orange},
    )
    plan = document["plan"]
    right.set_yscale("log")
    right.set_ylabel("p99, milliseconds (log)")
    right.set_title(f"Latency at {plan['rate']:g} msg/s: publish on n1, consume on the last node")
    right.legend()
    machine, load = document.get("machine", {}), document["load"]
    postgres = " ".join(str(document.get("postgres", "no PostgreSQL")).split()[:2])
    fig.suptitle(
        f"{document['started']}, {machine.get('cpus', '?')} CPUs shared by nodes, PostgreSQL and "
        f"clients; load average at start {load['start'][0]}; {postgres}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(reason: str) -> str:
    """A reason on one line: its first line and, for a log tail, the tail's last line."""
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"


@contextlib.contextmanager
def _interrupted_ok() -> Iterator[None]:
    # Ctrl-C ends the run early; what was measured is still written below.
    with contextlib.suppress(KeyboardInterrupt):
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, help="messages per throughput run (20,000)")
    parser.add_argument("--runs", type=int, help="runs per figure (3; --quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="3,000 messages, 1 run, 2 s of latency (debugging)")  # fmt: skip
    parser.add_argument("--configs", nargs="+", choices=[c.key for c in CONFIGS],
                        default=[c.key for c in CONFIGS], metavar="KEY",
                        help="configurations: sqlite pg1 pg2 pg3 (default all)")  # fmt: skip
    parser.add_argument("--rate", type=float,
                        help="publishes per second of the latency phase (500)")  # fmt: skip
    parser.add_argument("--duration", type=float, help="seconds of the latency phase (5)")
    parser.add_argument("--trace", action="store_true",
                        help="count each node's statements (benchmarks/pg_trace)")  # fmt: skip
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help="also run each configuration's nodes from TREE (another checkout), "
                        "interleaved: KEY-base beside KEY")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS / "cluster.json",
                        help="the JSON (the PNG goes beside it)")  # fmt: skip
    args = parser.parse_args(argv)
    base = QUICK_PLAN if args.quick else CLUSTER_PLAN
    plan = msgspec.structs.replace(
        base,
        count=base.count if args.messages is None else args.messages,
        runs=base.runs if args.runs is None else args.runs,
        rate=base.rate if args.rate is None else args.rate,
        duration=base.duration if args.duration is None else args.duration,
    )
    if plan.runs < 1 or plan.count < 3:
        parser.error("--runs must be at least 1 and --messages at least 3")
    raise_open_files()
    configs = [config for config in CONFIGS if config.key in args.configs]
    if args.baseline is not None:
        tree = str(args.baseline.resolve())
        configs = [
            version
            for config in configs
            for version in (
                msgspec.structs.replace(
                    config, key=f"{config.key}-base", label=f"{config.label} (base)", tree=tree
                ),
                config,
            )
        ]
    run = Run(plan, configs, args.out, args.trace)
    with _interrupted_ok():
        run.run()
    path = run.save()
    document = run.document()
    document["machine"] = msgspec.json.decode(path.read_bytes())["machine"]
    png = draw(document, path.with_suffix(".png"))
    load = document["load"]
    postgres = " ".join(str(document.get("postgres", "no PostgreSQL")).split()[:2])
    print(
        f"\n## Cluster mode ({document['started']}, {document['machine']['cpus']} CPUs, "
        f"load average {load['start']} -> {load['end']}; {postgres})\n"
    )
    print(table(document))
    if run.errors:
        print("\n### Skipped or failed\n")
        for label, reason in run.errors.items():
            print(f"- {label}: {_short(reason)}")
    print(f"\nsaved {path}" + (f"\nsaved {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plain frames: a client that does not batch, against NATS JetStream, in one run.

A browser, a client written from the frame table or a script with the
``websockets`` library sends one WebSocket message per frame and gets one
per frame back. This benchmark is that client (the roles below, with the
``websockets`` library's asyncio client, no compression, as a browser page
would be without ``permessage-deflate``):

* ``produce``: one ``publish {queue, content, ref}`` message per message,
  ``window`` (500) awaiting their ``confirm``;
* ``consume``: ``subscribe {queue, prefetch}`` on ``connections`` sockets,
  each ``deliver`` answered with its own ``ack {tags: [tag]}`` message.

NATS runs in the same run with its ordinary client (`benchmarks.peers.nats`:
``publish_async`` per message, one ``ack`` per message); our own batching
client (`benchmarks.ours`) can be added for reference (``--systems``).

Two tables, each from runs interleaved system by system (medians of
``--runs`` with min-max):

* **end to end** (`phases.flow`): ``--count`` 1 KiB messages, 500 in flight,
  prefetch 500, one producer and one consumer process;
* **consumers** (``--consumers 1 10 100``): the same flow on one queue with
  N competing consumers of prefetch ``--consumer-prefetch`` (10), opened by
  one consumer process.

Usage::

    python -m benchmarks.plain_frames                      # both tables
    python -m benchmarks.plain_frames --consumers          # no consumer table
    python -m benchmarks.plain_frames --only-consumers --systems wsbroker nats

The JSON goes to ``benchmarks/results/plain_frames.json`` (``--name``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import websockets.asyncio.client as ws_client

from . import report
from .harness import RESULTS, attempt, code_state, load_average, raise_open_files, save, say
from .ours import Ours, gather_bounded
from .peers.nats import Nats
from .phases import flow, queue_names
from .profiling import py_spy, recording, summarise
from .stats import summarise as summarise_runs
from .worker import Spec, wait_for_stop
from .workload import Plan, Tally, body

if TYPE_CHECKING:
    from collections.abc import Callable

    from .phases import System

__all__ = ["ROLES", "PlainOurs", "consume", "main", "produce"]


# -- the client: one WebSocket message per frame ------------------------------------


class _Incoming(msgspec.Struct):
    """The fields of a server frame this client reads (the others are skipped)."""

    op: str
    ref: int | None = None
    tag: int = 0
    content: msgspec.Raw = msgspec.Raw(b"null")
    code: str | None = None
    detail: str | None = None


_decode = msgspec.json.Decoder(_Incoming).decode


async def _connect(spec: Spec) -> ws_client.ClientConnection:
    url = spec.endpoint["url"].replace("http://", "ws://", 1) + "/ws"
    headers = {"Authorization": f"Bearer {spec.endpoint['token']}"}
    # No compression and no size limit: a plain client as cheap as the library allows.
    return await ws_client.connect(
        url, additional_headers=headers, compression=None, max_size=None, max_queue=None
    )


async def produce(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Publish ``count`` messages, one ``publish`` message each, ``window`` unconfirmed."""
    ws = await _connect(spec)
    queues = [msgspec.json.encode(queue) for queue in spec.queues]
    slots = asyncio.Semaphore(spec.window)
    confirmed = 0
    done = asyncio.Event()
    failure: list[str] = []

    async def read() -> None:
        nonlocal confirmed
        while True:
            frame = _decode(await ws.recv(decode=False))
            if frame.op == "confirm":
                confirmed += 1
                slots.release()
                if confirmed == spec.count:
                    done.set()
                    return
            elif frame.op == "error":
                failure.append(f"{frame.code}: {frame.detail}")
                done.set()
                return

    reader = asyncio.ensure_future(read())
    try:
        ready()
        started = time.monotonic()
        for seq in range(spec.count):
            await slots.acquire()
            if failure:
                break
            queue = queues[seq % len(queues)]
            await ws.send(
                b'{"op":"publish","queue":%b,"ref":%d,"content":%b}' % (queue, seq, body(seq)),
                text=True,
            )
        await done.wait()
        finished = time.monotonic()
        if failure:
            raise RuntimeError(f"publish refused: {failure[0]}")
        return {"published": spec.count, "started": started, "finished": finished}
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        await ws.close()


async def consume(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Subscribe on ``connections`` sockets to every queue; ack each delivery in its own frame."""
    tally = Tally(spec.count, measure=spec.rate > 0)
    sockets: list[ws_client.ClientConnection] = []
    tasks: list[asyncio.Task[None]] = []

    async def subscribe(ws: ws_client.ClientConnection) -> None:
        for queue in spec.queues:
            frame = {"op": "subscribe", "queue": queue, "prefetch": spec.prefetch}
            await ws.send(msgspec.json.encode(frame), text=True)
            reply = _decode(await ws.recv(decode=False))
            if reply.op != "subscribed":
                raise RuntimeError(f"subscribe refused: {reply.code}: {reply.detail}")

    async def drain(ws: ws_client.ClientConnection) -> None:
        while True:
            frame = _decode(await ws.recv(decode=False))
            if frame.op != "deliver":
                continue
            at = tally.arrived(frame.content)
            await ws.send(b'{"op":"ack","tags":[%d]}' % frame.tag, text=True)
            tally.counted(at)

    try:
        subscribing = time.monotonic()
        sockets = await gather_bounded((_connect(spec) for _ in range(spec.connections)), 50)
        await gather_bounded((subscribe(ws) for ws in sockets), 50)
        subscribed = time.monotonic()
        tasks = [asyncio.ensure_future(drain(ws)) for ws in sockets]
        ready()
        await (wait_for_stop() if spec.until_stop else tally.done.wait())
        last = time.monotonic()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return tally.report(subscribing=subscribing, subscribed=subscribed, last=last)


ROLES = {"produce": produce, "consume": consume}


class PlainOurs(Ours):
    """Our broker driven by the plain-frame client above (shares the broker of an `Ours`)."""

    key = "wsbroker-plain"
    name = "wsbroker, plain frames"
    module = "benchmarks.plain_frames"

    def __init__(self, ours: Ours, suffix: str = "") -> None:
        self._ours = ours
        if suffix:
            self.key = f"{self.key}{suffix}"
            self.name = f"{self.name} ({suffix.lstrip('@')})"

    def __enter__(self) -> PlainOurs:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def server_pid(self) -> int | None:
        return self._ours.server_pid()

    def version(self) -> str:
        return self._ours.version()

    def endpoint(self) -> dict[str, Any]:
        return self._ours.endpoint()

    def create(self, queues: Any, prefetch: int, consumers: int) -> None:
        self._ours.create(queues, prefetch, consumers)

    def delete(self, queues: Any) -> None:
        self._ours.delete(queues)


# -- the coordinator ------------------------------------------------------------------

SYSTEMS = ("wsbroker-plain", "wsbroker", "nats", "baseline-plain", "baseline")
"""``baseline-plain``, ``baseline``: the plain and our client against ``--baseline``'s broker."""


def _table(title: str, rows: dict[str, dict[str, Any]], systems: list[System]) -> str:
    """A markdown table: one row per point, one column per system (median, min-max)."""
    lines = [f"### {title}", ""]
    head = "| | " + " | ".join(system.name for system in systems)
    nats_key = "nats" if any(system.key == "nats" for system in systems) else None
    if nats_key:
        head += " | " + " | ".join(f"{s.key} / NATS" for s in systems if s.key != "nats")
    lines += [head + " |", "|" + "---|" * (head.count("|"))]
    for point, by_system in rows.items():
        cells = []
        for system in systems:
            summary = by_system.get(system.key)
            if summary is None:
                cells.append("failed")
                continue
            rate = summary["msgs_per_s"]
            cpu = summary.get("server_cpu_us", {}).get("median")
            cells.append(
                f"{rate['median']:,.0f} ({rate['min']:,.0f}-{rate['max']:,.0f})"
                + (f", server {cpu:.0f} µs/msg" if cpu is not None else "")
            )
        if nats_key and nats_key in by_system:
            nats = by_system[nats_key]["msgs_per_s"]["median"]
            for system in systems:
                if system.key != "nats":
                    ours = by_system.get(system.key)
                    ratio = ours["msgs_per_s"]["median"] / nats if ours else None
                    cells.append(f"{ratio:.2f}x" if ratio is not None else "-")
        lines.append(f"| {point} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interleaved(
    errors: dict[str, str],
    systems: list[System],
    runs: int,
    label: str,
    work: Callable[[System, int], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """``runs`` rounds of ``work`` over ``systems`` in turn; the summaries by system."""
    results: dict[str, list[dict[str, Any]]] = {system.key: [] for system in systems}
    for run in range(runs):
        for system in systems:
            name = f"{label} {system.key} run {run + 1}/{runs}"
            result = attempt(errors, name, partial(work, system, run))
            if result is not None:
                results[system.key].append(result)
                say(f"  {name}: {result['msgs_per_s']:,.0f} msg/s")
    return {key: summarise_runs(rs) for key, rs in results.items() if rs}


def _profile(
    plain: System, ours: Ours, plan: Plan, args: argparse.Namespace, errors: dict[str, str]
) -> dict[str, Any]:
    """py-spy on the broker during one plain e2e run and one 100-consumer run."""
    if py_spy() is None:
        errors["profile"] = "py-spy is not installed"
        return {}
    say("== profile")
    works = {
        "plain_e2e": lambda: flow(plain, plan, queue_names("plainprof", 0)),
        "plain_100_consumers": lambda: flow(
            plain, plan, queue_names("plainprofc", 0), consumers=100,
            prefetch=args.consumer_prefetch,
        ),
    }  # fmt: skip
    out: dict[str, Any] = {}
    for key, work in works.items():
        path = RESULTS / f"{args.name}-{key}.speedscope.json"

        def run(work: Callable[[], dict[str, Any]] = work, path: Path = path) -> dict[str, Any]:
            with recording(ours.broker.pid, path) as record:
                result = work()
            return {"run": result, **summarise(record, result["seconds"])}

        out[key] = attempt(errors, f"profile {key}", run)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the plain-frame tables and print them."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.plain_frames",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=20_000, help="messages per run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per figure")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS,
                        default=["wsbroker-plain", "nats"], help="in run order")  # fmt: skip
    parser.add_argument("--consumers", nargs="*", type=int, default=[1, 10, 100],
                        help="consumer counts of the consumers table (none: no table)")  # fmt: skip
    parser.add_argument("--consumer-prefetch", type=int, default=10)
    parser.add_argument("--only-consumers", action="store_true", help="skip the end-to-end table")
    parser.add_argument("--name", default="plain_frames", help="results file name")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout whose broker is system baseline-plain")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="py-spy a plain e2e run and a 100-consumer run")  # fmt: skip
    args = parser.parse_args(argv)
    raise_open_files()
    plan = Plan(count=args.count, runs=args.runs)
    errors: dict[str, str] = {}
    document: dict[str, Any] = {
        "count": args.count,
        "runs": args.runs,
        "code": code_state(),
        "load_start": load_average(),
    }
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(Ours())
        by_key: dict[str, System] = {"wsbroker": ours, "wsbroker-plain": PlainOurs(ours)}
        if args.baseline is not None and {"baseline-plain", "baseline"} & set(args.systems):
            # The same clients (this checkout) against the other checkout's broker
            # (PYTHONSAFEPATH: not this directory first on its path).
            home = str(args.baseline.resolve())
            baseline = stack.enter_context(Ours(PYTHONPATH=home, PYTHONSAFEPATH="1"))
            by_key["baseline-plain"] = PlainOurs(baseline, "@baseline")
            baseline.key, baseline.name = "wsbroker@baseline", "wsbroker (baseline)"
            by_key["baseline"] = baseline
        if "nats" in args.systems:
            why = Nats.unavailable()
            if why is None:
                by_key["nats"] = stack.enter_context(Nats())
            else:
                say(f"NATS skipped: {why}")
        systems = [by_key[key] for key in args.systems if key in by_key]
        document["versions"] = {system.key: system.version() for system in systems}
        tables = []
        if not args.only_consumers:
            say("== end to end")
            serial = itertools.count()

            def e2e(system: System, run: int) -> dict[str, Any]:
                return flow(system, plan, queue_names(f"plain{next(serial)}", run))

            rows = {"end to end": _interleaved(errors, systems, args.runs, "e2e", e2e)}
            document["e2e"] = rows["end to end"]
            tables.append(_table(f"End to end, {args.count:,} x 1 KiB, 500 in flight", rows,
                                 systems))  # fmt: skip
        if args.consumers:
            say("== consumers")
            consumer_rows: dict[str, dict[str, Any]] = {}
            for n in args.consumers:

                def point(system: System, run: int, n: int = n) -> dict[str, Any]:
                    queues = queue_names(f"plainc{n}", run)
                    return flow(system, plan, queues, consumers=n, prefetch=args.consumer_prefetch)

                consumer_rows[f"{n} consumers"] = _interleaved(
                    errors, systems, args.runs, f"{n} consumers", point
                )
            document["consumers"] = consumer_rows
            tables.append(_table(f"One queue, N consumers of prefetch {args.consumer_prefetch}",
                                 consumer_rows, systems))  # fmt: skip
        if args.profile:
            document["profile"] = _profile(by_key["wsbroker-plain"], ours, plan, args, errors)
            tables.append(report.profile_tables(document["profile"]))
    document["load_end"] = load_average()
    document["errors"] = errors
    path = save(args.name, document)
    print("\n\n".join(tables))
    for label, reason in errors.items():
        print(f"- {label}: {reason}")
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark suite: this broker and its peers, same workload, one run.

Run: ``python -m benchmarks.suite [--quick] [--only PHASE ...] [--runs N]``.

It starts our broker (``python -m transports serve``, TLS off, a fresh data
dir, durable defaults, publish/consume rate limits off) and uses RabbitMQ
and NATS JetStream where they listen on 127.0.0.1 (else says why it skips
them). Producers and consumers are client processes of their own on
uvloop; messages are 1 KiB; every figure is the median of ``--runs`` runs
with its min-max, the runs of the systems interleaved so that a burst of
background load hits one run of each rather than all runs of one.

Phases (``--only`` takes any of them; ``drain`` publishes its backlog, so
it brings ``publish`` along):

* ``e2e``, ``publish``, ``drain``, ``latency``: `benchmarks.phases`;
* ``rest``: wrk against the REST publish and a bare Litestar endpoint
  (`benchmarks.bench_http`);
* ``scaling``: 1, 4, 16 queues; 1, 10, 100 consumers (`benchmarks.scaling`);
* ``ceilings``: WebSocket echo, SQLite batched inserts (`benchmarks.ceilings`);
* ``profile``: py-spy on the broker during WS end to end, WS end to end with
  100 consumers on one queue, and REST publish
  (`benchmarks.profiling`);
* ``memory``: 1,000,000 pending messages and the restart with them;
  ``consumers``: 5,000 WebSocket consumers (`benchmarks.memory`).

It prints Markdown tables (figures, targets, profiles) and writes
``results/suite.json`` and ``results/*.png`` (``--results`` elsewhere);
``--merge`` replaces only the phases it ran in an existing ``suite.json``
(each rerun is listed with its time and load).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from . import memory, plots, report
from .bench_http import bare_endpoint, broker_publish, have_wrk, wrk
from .ceilings import sqlite_run, ws_echo
from .harness import (
    RESULTS,
    attempt,
    code_state,
    load_average,
    machine,
    raise_open_files,
    say,
)
from .ours import Ours
from .peers import Nats, RabbitMQ
from .phases import flow, latency, publish_then_drain, queue_names
from .profiling import py_spy, recording, summarise
from .scaling import AXES, point
from .stats import summarise as summarise_runs
from .workload import Plan

if TYPE_CHECKING:
    from collections.abc import Callable

    from .phases import System

__all__ = ["PHASES", "main"]

PHASES = (
    "e2e",
    "publish",
    "drain",
    "latency",
    "rest",
    "scaling",
    "ceilings",
    "profile",
    "memory",
    "consumers",
)
SYSTEM_TYPES: dict[str, Any] = {"wsbroker": Ours, "rabbitmq": RabbitMQ, "nats": Nats}


class Suite:
    """One run of the suite: its plan, the systems under test, and the document it fills."""

    def __init__(self, plan: Plan, phases: list[str], results_dir: Path) -> None:
        self.plan = plan
        self.phases = phases
        self.results_dir = results_dir
        self.systems: list[Any] = []
        self.ours: Ours | None = None
        self.errors: dict[str, str] = {}
        self.results: dict[str, Any] = {}
        self.phase_load: dict[str, list[float]] = {}

    def attempt(self, label: str, work: Callable[[], Any]) -> Any:
        """Run ``work``; on failure record why under ``label`` and return None."""
        return attempt(self.errors, label, work)

    def _phase(self, name: str) -> None:
        self.phase_load[name] = load_average()
        say(f"\n== {name} (load average {self.phase_load[name]})")

    # -- the phases -----------------------------------------------------------------

    def throughput(self) -> None:
        wanted = [phase for phase in ("e2e", "publish", "drain") if phase in self.phases]
        self._phase("+".join(wanted))
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            phase: {system.key: [] for system in self.systems} for phase in wanted
        }
        drains = "publish" in wanted or "drain" in wanted
        for run in range(self.plan.runs):
            for system in self.systems:
                label = f"{system.key} run {run + 1}/{self.plan.runs}"
                if "e2e" in wanted:
                    result = self.attempt(
                        f"e2e {label}",
                        partial(flow, system, self.plan, queue_names("e2e", run)),
                    )
                    if result is not None:
                        runs["e2e"][system.key].append(result)
                        say(f"  e2e {label}: {result['msgs_per_s']:,.0f} msg/s")
                if drains:
                    pair = self.attempt(
                        f"publish/drain {label}",
                        partial(
                            publish_then_drain, system, self.plan, queue_names("backlog", run)[0]
                        ),
                    )
                    if pair is not None:
                        for phase, result in zip(("publish", "drain"), pair, strict=True):
                            if phase in runs:
                                runs[phase][system.key].append(result)
                        say(
                            f"  publish {label}: {pair[0]['msgs_per_s']:,.0f} msg/s, "
                            f"drain {pair[1]['msgs_per_s']:,.0f} msg/s"
                        )
        for phase, per_system in runs.items():
            self.results[phase] = {key: summarise_runs(rs) for key, rs in per_system.items() if rs}

    def latency(self) -> None:
        self._phase("latency")
        runs: dict[str, list[dict[str, Any]]] = {system.key: [] for system in self.systems}
        for run in range(self.plan.runs):
            for system in self.systems:
                label = f"latency {system.key} run {run + 1}/{self.plan.runs}"
                result = self.attempt(
                    label,
                    partial(latency, system, self.plan, queue_names("latency", run)[0]),
                )
                if result is not None:
                    runs[system.key].append(result)
                    say(
                        f"  {label}: deliver p50 {result['deliver_p50_ms']:.2f} "
                        f"p99 {result['deliver_p99_ms']:.2f} max {result['deliver_max_ms']:.2f} ms"
                    )
        self.results["latency"] = {key: summarise_runs(rs) for key, rs in runs.items() if rs}

    def rest(self) -> None:
        self._phase("rest")
        if not have_wrk():
            self.errors["rest"] = "skipped: wrk is not installed"
            say("  skipping: wrk is not installed")
            return
        if self.ours is None:
            self.errors["rest"] = "skipped: our broker is not in --systems"
            return
        broker, plan = self.ours.broker, self.plan
        runs: dict[str, list[dict[str, Any]]] = {"wsbroker": [], "bare_litestar": []}
        with bare_endpoint() as bare_url:
            for run in range(plan.runs):
                bare = self.attempt(
                    f"rest bare run {run + 1}",
                    partial(wrk, bare_url, plan.rest_connections, plan.rest_seconds, None),
                )
                ours = self.attempt(
                    f"rest wsbroker run {run + 1}",
                    partial(
                        broker_publish,
                        broker,
                        queue_names("rest", run)[0],
                        plan.rest_connections,
                        plan.rest_seconds,
                    ),
                )
                for key, result in (("bare_litestar", bare), ("wsbroker", ours)):
                    if result is not None:
                        runs[key].append(result)
                        say(f"  rest {key} run {run + 1}: {result['requests_per_s']:,.0f} req/s")
        self.results["rest"] = {key: summarise_runs(rs) for key, rs in runs.items() if rs}

    def scaling(self) -> None:
        self._phase("scaling")
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for axis in AXES:
            out[axis] = {}
            for n in getattr(self.plan, axis):
                runs: dict[str, list[dict[str, Any]]] = {system.key: [] for system in self.systems}
                for run in range(self.plan.runs):
                    for system in self.systems:
                        label = f"scaling {n} {axis} {system.key} run {run + 1}/{self.plan.runs}"
                        result = self.attempt(
                            label, partial(point, system, self.plan, axis, n, run)
                        )
                        if result is not None:
                            runs[system.key].append(result)
                            say(f"  {label}: {result['msgs_per_s']:,.0f} msg/s")
                out[axis][str(n)] = {key: summarise_runs(rs) for key, rs in runs.items() if rs}
        self.results["scaling"] = out

    def ceilings(self) -> None:
        self._phase("ceilings")
        runs: dict[str, list[dict[str, Any]]] = {"ws_echo": [], "sqlite_inserts": []}
        for run in range(self.plan.runs):
            for key, work in (("ws_echo", ws_echo), ("sqlite_inserts", sqlite_run)):
                result = self.attempt(f"ceilings {key} run {run + 1}", partial(work, self.plan))
                if result is not None:
                    runs[key].append(result)
                    say(f"  {key} run {run + 1}: {result['msgs_per_s']:,.0f} /s")
        self.results["ceilings"] = {key: summarise_runs(rs) for key, rs in runs.items() if rs}

    def profile(self) -> None:
        self._phase("profile")
        if py_spy() is None:
            self.errors["profile"] = "skipped: py-spy is not installed"
            say("  skipping: py-spy is not installed (pip install -e '.[bench]')")
            return
        if self.ours is None:
            self.errors["profile"] = "skipped: our broker is not in --systems"
            return
        ours, plan = self.ours, self.plan
        ours.endpoint()  # log in now: the password hash is not the broker's hot path
        # (key, speedscope file, the work, its traffic's seconds from its result)
        works: list[tuple[str, str, Callable[[], dict[str, Any]], Callable[[Any], float]]] = [
            (
                "ws_e2e",
                "ws-e2e",
                lambda: flow(ours, plan, queue_names("profile-ws", 0)),
                lambda result: result["seconds"],
            ),
            (
                # The scaling row furthest from NATS: one queue, 100 competing consumers
                # (a run number past the scaling phase's, for queue names of its own).
                "ws_100_consumers",
                "ws-100-consumers",
                lambda: point(ours, plan, "consumers", 100, plan.runs),
                lambda result: result["seconds"],
            ),
        ]
        if have_wrk():
            rest_queue = queue_names("profile-rest", 0)[0]
            works.append(
                (
                    "rest_publish",
                    "rest-publish",
                    lambda: broker_publish(
                        ours.broker, rest_queue, plan.rest_connections, plan.rest_seconds
                    ),
                    lambda _: plan.rest_seconds,
                )
            )
        out: dict[str, Any] = {}
        for key, name, work, seconds in works:
            path = self.results_dir / f"profile-{name}.speedscope.json"
            out[key] = self.attempt(
                f"profile {key}", partial(_profiled, ours.broker.pid, path, work, seconds)
            )
        self.results["profile"] = out

    def memory(self) -> None:
        self._phase("memory")
        result = self.attempt("memory", partial(memory.pending, self.plan))
        if result is not None:
            self.results["memory"] = result
            say(f"  {json.dumps(result)}")

    def consumers(self) -> None:
        self._phase("consumers")
        result = self.attempt("consumers", partial(memory.consumers, self.plan))
        if result is not None:
            self.results["consumers"] = result
            say(f"  {json.dumps(result)}")

    # -- the run --------------------------------------------------------------------

    def run(self, keys: list[str]) -> dict[str, Any]:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        load_start = load_average()
        systems: dict[str, dict[str, Any]] = {}
        # The memory phases start brokers of their own; the others share these.
        messaging = {"e2e", "publish", "drain", "latency", "scaling", "rest", "profile"}
        with contextlib.ExitStack() as stack:
            for key in keys if messaging & set(self.phases) else []:
                kind = SYSTEM_TYPES[key]
                reason = kind.unavailable()
                if reason is not None:
                    say(f"skipping {kind.name}: {reason}")
                    systems[key] = {"name": kind.name, "skipped": reason}
                    continue
                system: System = stack.enter_context(kind())
                systems[key] = {"name": kind.name, "version": system.version()}
                self.systems.append(system)
                if isinstance(system, Ours):
                    self.ours = system
            say(f"systems: {json.dumps(systems)}")
            if {"e2e", "publish", "drain"} & set(self.phases):
                self.throughput()
            for name in PHASES[3:]:
                if name in self.phases:
                    getattr(self, name)()
        return {
            "suite": "wsbroker benchmarks",
            "when": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "code": code_state(),
            "load": {"start": load_start, "end": load_average(), "phases": self.phase_load},
            "plan": msgspec.to_builtins(self.plan),
            "phases": self.phases,
            "systems": systems,
            "results": self.results,
            "errors": self.errors,
        }


def _profiled(
    pid: int,
    path: Path,
    work: Callable[[], dict[str, Any]],
    seconds: Callable[[Any], float],
) -> dict[str, Any]:
    """Run ``work`` under py-spy; its result and where the broker's samples fell."""
    with recording(pid, path) as record:
        result = work()
    return {"run": result, **summarise(record, seconds(result))}


def _merge(previous: dict[str, Any], rerun: dict[str, Any]) -> dict[str, Any]:
    """``previous`` with the phases of ``rerun`` replaced; the rerun's time and load recorded."""
    if previous.get("quick") != rerun["quick"]:
        raise SystemExit("--merge: the existing suite.json has another --quick setting")
    document = dict(previous)
    document["results"] = {**previous.get("results", {}), **rerun["results"]}
    document["load"] = dict(previous.get("load", {}))
    document["load"]["phases"] = {
        **previous.get("load", {}).get("phases", {}),
        **{f"{phase} (rerun)": load for phase, load in rerun["load"]["phases"].items()},
    }
    document["systems"] = {**previous.get("systems", {}), **rerun["systems"]}
    rerun_phases = set(rerun["phases"])
    document["errors"] = {
        **{
            label: reason
            for label, reason in previous.get("errors", {}).items()
            if label.split()[0].split("/")[0] not in rerun_phases
        },
        **rerun["errors"],
    }
    document["reruns"] = [
        *previous.get("reruns", []),
        {key: rerun[key] for key in ("phases", "when", "finished", "load", "code")},
    ]
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="5,000 messages per run (debugging)")
    parser.add_argument("--only", nargs="+", choices=PHASES, metavar="PHASE",
                        help=f"run only these phases ({', '.join(PHASES)})")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEM_TYPES),
                        default=list(SYSTEM_TYPES), help="systems (default all)")  # fmt: skip
    parser.add_argument("--results", type=Path, default=RESULTS, help="where JSON and PNGs go")
    parser.add_argument("--merge", action="store_true",
                        help="replace only these phases in the existing suite.json")  # fmt: skip
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    plan = Plan.quick(args.runs) if args.quick else Plan(runs=args.runs)
    phases = list(args.only or PHASES)
    if "drain" in phases and "publish" not in phases:
        phases.append("publish")
    raise_open_files()
    args.results.mkdir(parents=True, exist_ok=True)
    suite = Suite(plan, [phase for phase in PHASES if phase in phases], args.results)
    document = suite.run(args.systems)
    document["quick"] = args.quick
    path = args.results / "suite.json"
    if args.merge and path.exists():
        document = _merge(json.loads(path.read_text()), document)
    document["targets"] = report.targets(document)
    path.write_text(json.dumps(document, indent=2) + "\n")
    drawn = plots.draw(document, args.results)
    load = document["load"]
    print(f"\n## Results ({document['when']}, load average {load['start']} -> {load['end']})\n")
    for rerun in document.get("reruns", []):
        print(f"Rerun: {', '.join(rerun['phases'])} at {rerun['when']}, load average "
              f"{rerun['load']['start']} -> {rerun['load']['end']}\n")  # fmt: skip
    print(report.table(document))
    print("\n### Targets\n")
    print(report.targets_table(document["targets"]))
    if "profile" in document["results"]:
        print("\n### Profiles\n")
        print(report.profile_tables(document["results"]["profile"]))
    if document["errors"]:
        print("\n### Skipped or failed\n")
        for label, reason in document["errors"].items():
            print(f"- {label}: {reason}")
    print(f"\nsaved {path}" + "".join(f"\nsaved {png}" for png in drawn))
    return 0


if __name__ == "__main__":
    sys.exit(main())

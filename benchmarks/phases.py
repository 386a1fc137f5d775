"""The messaging phases, run the same way against every system.

A system (`Ours`, `RabbitMQ`, `Nats`) names the module of its client roles
and makes and deletes the queues of a run; the phase starts its producer
and consumer as separate processes (`harness.Workers`) and turns their
monotonic timestamps into figures:

* `flow` (end to end): the consumer subscribes first; then the producer
  publishes ``count`` messages, ``window`` awaiting their confirms, while the
  consumer acks each on arrival. Messages / (last ack - first publish).
  With several queues or consumers it is the scaling phase.
* `publish_then_drain`: publish ``count`` with no consumer (messages /
  (last confirm - first publish)), then consume and ack that backlog
  (messages / (last ack - subscribe)).
* `latency`: publish at a fixed rate for a fixed time while a consumer
  acks; per message, publish-to-deliver (consumer's clock minus the stamp
  in the body) and publish-to-confirm (producer's side).

Every run uses fresh queues, deleted afterwards; every wait is bounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .harness import Workers, cpu_seconds
from .stats import percentiles
from .worker import Spec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .workload import Plan

__all__ = ["System", "flow", "latency", "publish_then_drain", "queue_names"]

READY_TIMEOUT = 120.0


class System(Protocol):
    """What a phase needs from a system under test."""

    key: str
    name: str
    module: str

    def version(self) -> str:
        """Its name and version, for the results."""

    def server_pid(self) -> int | None:
        """The server's process, to read the CPU it used (None if it can't be seen)."""

    def endpoint(self) -> dict[str, Any]:
        """How its clients reach it (passed to the workers)."""

    def create(self, queues: Sequence[str], prefetch: int, consumers: int) -> None:
        """Make ``queues`` afresh, for ``consumers`` subscribers with ``prefetch`` each."""

    def delete(self, queues: Sequence[str]) -> None:
        """Delete ``queues`` and their messages."""


def queue_names(phase: str, run: int, count: int = 1) -> list[str]:
    """Names valid for every system (our queues, RabbitMQ queues, NATS streams)."""
    return [f"wsbroker-bench-{phase}-{run}-{index}" for index in range(count)]


class _Cpu:
    """CPU seconds the server uses from now on (its process, whatever else it serves)."""

    def __init__(self, system: System) -> None:
        self.pid = system.server_pid()
        self.start = cpu_seconds(self.pid)

    def used(self) -> float | None:
        end = cpu_seconds(self.pid)
        return None if end is None or self.start is None else end - self.start


def _per_message(count: int, server: float | None, *clients: dict[str, Any]) -> dict[str, Any]:
    """CPU microseconds per message, in the server and in the client processes."""
    out: dict[str, Any] = {"client_cpu_us": 1e6 * sum(c["cpu_s"] for c in clients) / count}
    if server is not None:
        out["server_cpu_us"] = 1e6 * server / count
    return out


def _spec(system: System, role: str, queues: list[str], **fields: Any) -> Spec:
    return Spec(
        module=system.module, role=role, endpoint=system.endpoint(), queues=queues, **fields
    )


def flow(
    system: System,
    plan: Plan,
    queues: list[str],
    *,
    consumers: int = 1,
    prefetch: int | None = None,
) -> dict[str, Any]:
    """One end-to-end run: publish with confirms while consumers receive and ack."""
    prefetch = plan.prefetch if prefetch is None else prefetch
    timeout = plan.timeout()
    system.create(queues, prefetch, consumers)
    try:
        with Workers() as workers:
            cpu = _Cpu(system)
            consumer = workers.start(
                _spec(
                    system,
                    "consume",
                    queues,
                    count=plan.count,
                    prefetch=prefetch,
                    connections=consumers,
                    timeout=timeout,
                )
            )
            consumer.wait_ready(READY_TIMEOUT)
            producer = workers.start(
                _spec(
                    system, "produce", queues, count=plan.count, window=plan.window, timeout=timeout
                )
            )
            produced = producer.result()
            consumed = consumer.result()
            server = cpu.used()
    finally:
        system.delete(queues)
    elapsed = consumed["last"] - produced["started"]
    return {
        "msgs_per_s": plan.count / elapsed,
        "publish_msgs_per_s": plan.count / (produced["finished"] - produced["started"]),
        "seconds": elapsed,
        "received": consumed["received"],
        **_per_message(plan.count, server, produced, consumed),
    }


def publish_then_drain(
    system: System, plan: Plan, queue: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One publish-only run into an empty queue, then one drain-only run of its backlog."""
    timeout = plan.timeout()
    system.create([queue], plan.prefetch, 1)
    try:
        with Workers() as workers:
            cpu = _Cpu(system)
            producer = workers.start(
                _spec(
                    system,
                    "produce",
                    [queue],
                    count=plan.count,
                    window=plan.window,
                    timeout=timeout,
                )
            )
            produced = producer.result()
            publish_cpu, cpu = cpu.used(), _Cpu(system)
            consumer = workers.start(
                _spec(
                    system,
                    "consume",
                    [queue],
                    count=plan.count,
                    prefetch=plan.prefetch,
                    timeout=timeout,
                )
            )
            consumed = consumer.result()
            drain_cpu = cpu.used()
    finally:
        system.delete([queue])
    publish_s = produced["finished"] - produced["started"]
    drain_s = consumed["last"] - consumed["subscribe_started"]
    return (
        {
            "msgs_per_s": plan.count / publish_s,
            "seconds": publish_s,
            **_per_message(plan.count, publish_cpu, produced),
        },
        {
            "msgs_per_s": plan.count / drain_s,
            "seconds": drain_s,
            "received": consumed["received"],
            **_per_message(plan.count, drain_cpu, consumed),
        },
    )


def latency(system: System, plan: Plan, queue: str) -> dict[str, Any]:
    """One latency run: ``plan.rate`` msg/s for ``plan.duration`` s through one queue."""
    total = round(plan.rate * plan.duration)
    timeout = plan.duration + 60
    system.create([queue], plan.prefetch, 1)
    try:
        with Workers() as workers:
            consumer = workers.start(
                _spec(
                    system,
                    "consume",
                    [queue],
                    count=total,
                    prefetch=plan.prefetch,
                    rate=plan.rate,
                    timeout=timeout,
                )
            )
            consumer.wait_ready(READY_TIMEOUT)
            cpu = _Cpu(system)
            producer = workers.start(
                _spec(
                    system,
                    "produce",
                    [queue],
                    rate=plan.rate,
                    duration=plan.duration,
                    timeout=timeout,
                )
            )
            produced = producer.result()
            consumed = consumer.result()
            server = cpu.used()
    finally:
        system.delete([queue])
    deliver, confirm = percentiles(consumed["deliver"]), percentiles(produced["confirm"])
    return {
        "achieved_rate": produced["achieved_rate"],
        "received": consumed["received"],
        **_per_message(total, server, produced, consumed),
        **{f"deliver_{key}": value for key, value in deliver.items()},
        **{f"confirm_{key}": value for key, value in confirm.items()},
    }

"""A client process of a benchmark: ``python -m benchmarks.worker SPEC.json``.

The coordinator (`harness.Workers`) writes a `Spec` naming a module and one
of its roles (``benchmarks.ours`` ``consume``, ``benchmarks.peers.nats``
``produce``, ``benchmarks.ceilings`` ``echo_server``, ...). The worker runs
that coroutine on uvloop, bounded by ``spec.timeout``, and writes its JSON
result to ``spec.out``. A role calls ``ready()`` once it can take load (a
consumer subscribed, a server listening): the worker then prints ``ready``,
the only line it writes to stdout. ``until_stop`` roles end when a line
arrives on stdin. The result also says how much CPU the role used
(``cpu_s``, user + system, after the imports).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import resource
import sys
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    Role = Callable[["Spec", Callable[[], None]], Awaitable[dict[str, Any]]]

__all__ = ["Spec", "main", "wait_for_stop"]


class Spec(msgspec.Struct, kw_only=True):
    """What one client process does; the fields a role doesn't use keep their defaults."""

    module: str
    """The module holding the role (``benchmarks.ours``)."""
    role: str
    """The coroutine's name in the module's ``ROLES``."""
    endpoint: dict[str, Any] = {}
    """How to reach the system (url, token, port, path)."""
    queues: list[str] = []
    """Queues (streams) to publish to or consume from, round-robin."""
    count: int = 0
    """Messages to publish, or to receive before a consumer ends (0: until stopped)."""
    window: int = 500
    """Publishes in flight (unconfirmed) at once."""
    prefetch: int = 500
    """Unacked deliveries a consumer may hold, per subscription."""
    connections: int = 1
    """Client connections this process opens (each subscribes to every queue)."""
    rate: float = 0.0
    """Publishes per second (latency phase); 0 publishes as fast as confirms allow."""
    duration: float = 0.0
    """Seconds of publishing at ``rate``."""
    batch: int = 500
    """Rows per transaction (the SQLite ceiling)."""
    frame_bytes: int = 1024
    """Size of a frame (the WebSocket echo ceiling)."""
    record_ids: bool = False
    """Return every received message id (to check that each was delivered)."""
    until_stop: bool = False
    """Run until a line comes on stdin instead of until ``count``."""
    timeout: float = 120.0
    """The role is cancelled after this many seconds."""
    out: str = ""
    """Where the JSON result goes (set by `harness.Workers`)."""


async def wait_for_stop() -> None:
    """Return when the coordinator writes a line on stdin (or closes it)."""
    await asyncio.to_thread(sys.stdin.readline)


async def _run(role: Role, spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    async with asyncio.timeout(spec.timeout):
        return await role(spec, ready)


def main(argv: list[str]) -> None:
    """Run the role a spec file names and write its result."""
    import uvloop
    from loguru import logger

    logger.remove()  # the client library's debug lines are not results
    with open(argv[0], "rb") as source:
        spec = msgspec.json.decode(source.read(), type=Spec)
    module = importlib.import_module(spec.module)
    role: Role = module.ROLES[spec.role]
    # stdout carries only "ready": everything else anyone prints goes to stderr.
    sys.stdout.flush()
    ready_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def ready() -> None:
        ready_out.write("ready\n")
        ready_out.flush()

    before = resource.getrusage(resource.RUSAGE_SELF)
    result = uvloop.run(_run(role, spec, ready))
    after = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    with open(spec.out, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main(sys.argv[1:])

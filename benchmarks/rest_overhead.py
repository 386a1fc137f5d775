"""Where a REST publish's CPU goes: the app called in-process, without an HTTP server.

Run: ``python -m benchmarks.rest_overhead [--requests 20000] [--runs 3] [--pyinstrument]``.

The suite's ``rest`` phase measures the broker behind uvicorn and wrk,
whose share of the machine hides the app's own cost. Here each app is
called as an ASGI callable by 64 concurrent tasks on uvloop, with the
suite's 1 KiB body, and the process CPU per request is read around them:

* ``bare``: `benchmarks.bare_app` (decode the body, answer a result);
* ``broker``: the broker's app (`transports.app.create_app`) with a fresh
  SQLite data dir, its auth, middleware, actor and group commit;
* ``no_publish``: the same app, the broker's ``publish`` replaced by one
  that answers at once: what routing, auth, middleware, the body and the
  response cost without the actor and the commit (a decomposition, not a
  mode of the broker).

The writer thread's CPU is in the process CPU, as it is in the broker's.
Variants alternate run by run; the table shows medians (min-max).

``--pyinstrument`` adds one more ``broker`` run under pyinstrument (the
event-loop thread, sampled every millisecond, tasks not told apart): it
prints the call tree in % of wall time (the self time of ``Runner.run`` is
uvloop's C code and the waits for a commit) and saves it as
``rest_overhead.pyinstrument.txt`` beside the JSON. It complements the
suite's py-spy profiles of the broker process: in-process, the tree shows
the app's own layers (routing, auth, middleware, the publish) without
uvicorn and the sockets around them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import uvloop

from broker_core.messages import PublishResult
from broker_core.settings import Settings
from transports.app import create_app
from transports.logging import configure_logging

from . import bare_app
from .harness import RESULTS, positive_int, save
from .workload import rest_body

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path

    from pyinstrument import Profiler

__all__ = ["main"]

_CONCURRENCY = 64
_PASSWORD = "rest-overhead-password"


async def _call(
    app: Any, method: str, path: str, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # a disconnect never comes
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
        "extensions": {},
    }
    await app(scope, receive, send)
    return sent


async def _measure(
    app: Any,
    headers: Sequence[tuple[bytes, bytes]],
    requests: int,
    profiler: Profiler | None = None,
) -> float:
    """CPU microseconds per publish, ``requests`` of them over 64 concurrent callers."""
    body = rest_body()

    async def caller(count: int) -> None:
        for _ in range(count):
            sent = await _call(app, "POST", "/queues/q/messages", body, headers)
            assert sent[0]["status"] == 201, sent

    await caller(200)  # warm up
    if profiler is not None:
        profiler.start()
    started = time.process_time()
    await asyncio.gather(*(caller(requests // _CONCURRENCY) for _ in range(_CONCURRENCY)))
    if profiler is not None:
        profiler.stop()
    return 1e6 * (time.process_time() - started) / (requests // _CONCURRENCY * _CONCURRENCY)


async def _lifespan(app: Any) -> Callable[[], Awaitable[None]]:
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started

    async def stop() -> None:
        inbox.put_nowait({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return stop


async def _broker(requests: int, publish: bool, profiler: Profiler | None = None) -> float:
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings.from_env(
            {},
            data_dir=directory,
            tls=False,
            admin_password=_PASSWORD,
            rate_publish_per_s=0,
            rate_consume_per_s=0,
            log_level="WARNING",
        )
        configure_logging(settings)
        app = create_app(settings)
        stop = await _lifespan(app)
        try:
            login = msgspec.json.encode({"username": "admin", "password": _PASSWORD})
            sent = await _call(app, "POST", "/auth/token", login)
            token = msgspec.json.decode(sent[1]["body"])["access_token"]
            headers = ((b"authorization", f"Bearer {token}".encode()),)
            created = await _call(app, "POST", "/queues", b'{"name":"q"}', headers)
            assert created[0]["status"] == 201, created
            if not publish:

                async def answer(name: str, requests: Any) -> list[PublishResult]:
                    now = datetime.now(UTC)
                    return [PublishResult(message_id=1, queue=name, created_at=now)]

                app.state["ctx"].broker.publish = answer
            return await _measure(app, headers, requests, profiler)
        finally:
            await stop()


async def _run(variant: str, requests: int) -> float:
    if variant == "bare":
        return await _measure(bare_app.app, (), requests)
    return await _broker(requests, publish=variant == "broker")


def _profile(requests: int, directory: Path) -> None:
    """One ``broker`` run under pyinstrument: print and save its call tree."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    cpu = uvloop.run(_broker(requests, publish=True, profiler=profiler))
    tree = profiler.output_text(unicode=True, time="percent_of_total")
    print(f"\nUnder pyinstrument ({cpu:.1f} µs per request with the profiler on):{tree}")
    path = directory / "rest_overhead.pyinstrument.txt"
    path.write_text(tree)
    print(f"saved {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rest_overhead", description=__doc__)
    parser.add_argument("--requests", type=positive_int, default=20_000, help="publishes per run")
    parser.add_argument("--runs", type=positive_int, default=3, help="runs per variant")
    parser.add_argument(
        "--pyinstrument", action="store_true", help="one more broker run under pyinstrument"
    )
    args = parser.parse_args(argv)
    variants = ("bare", "broker", "no_publish")
    runs: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(args.runs):
        for variant in variants:
            runs[variant].append(uvloop.run(_run(variant, args.requests)))
    print(f"\nREST publish in-process, {args.requests:,} requests, {_CONCURRENCY} callers")
    print("  variant        CPU µs per request")
    for variant, values in runs.items():
        print(
            f"  {variant:<12} {statistics.median(values):>8.1f}"
            f"  ({min(values):.1f}-{max(values):.1f})"
        )
    print(f"\nsaved {save('rest_overhead', {'requests': args.requests, 'runs': runs})}")
    if args.pyinstrument:
        _profile(args.requests, RESULTS)


if __name__ == "__main__":
    main()

"""The ceilings of our own stack, measured in the same run as the broker.

What the broker could do at best if its own code cost nothing:

* **WebSocket echo** (``echo_server`` / ``echo_client`` roles): a bare
  `websockets` server echoing every frame, and a `websockets` client sending
  ``count`` text frames the size of our publish frame, ``window`` in flight;
  frames / (last echo - first send). A broker round trip moves about twice
  as many frames (publish in, confirm out, deliver out, acks in batches).
* **SQLite batched inserts** (``sqlite_inserts`` role): aiosqlite, WAL,
  ``synchronous=NORMAL``, our ``messages`` table (``storage/sqlite/schema.sql``)
  and row shape, ``batch`` rows per transaction; rows per second.
* **Bare Litestar endpoint** (`benchmarks.bare_app`, driven by wrk in the
  suite's ``rest`` phase): decodes the publish body and answers 201.

Each runs in processes of its own, on uvloop like the broker.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .harness import Workers, free_port
from .worker import Spec, wait_for_stop
from .workload import body

if TYPE_CHECKING:
    from collections.abc import Callable

    from .workload import Plan

__all__ = ["ROLES", "publish_frame", "sqlite_run", "ws_echo"]

_COLUMNS = (
    "id, queue, status, priority, attempt, redelivered, created_at, deliver_at, expires_at, "
    "lease_deadline, size, content, headers, dedup_id, last_error, dead_lettered_from, settled_at"
)
_INSERT = f"INSERT INTO messages ({_COLUMNS}) VALUES ({', '.join('?' * 17)})"


def publish_frame(seq: int = 0) -> bytes:
    """The JSON frame our client sends to publish one 1 KiB message."""
    from transports.wire import Publish, json_encoder

    frame = Publish(queue="wsbroker-bench-e2e-0-0", content=msgspec.Raw(body(seq)), ref=seq + 1)
    return json_encoder.encode(frame)


async def echo_server(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Echo every frame back on the same connection until stopped."""
    from websockets.asyncio.server import ServerConnection, serve

    frames = 0

    async def echo(ws: ServerConnection) -> None:
        nonlocal frames
        async for message in ws:
            await ws.send(message)
            frames += 1

    async with serve(echo, "127.0.0.1", spec.endpoint["port"], max_size=None, compression=None):
        ready()
        await wait_for_stop()
    return {"frames": frames}


async def echo_client(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Send ``count`` publish-sized text frames, ``window`` unanswered at once."""
    from websockets.asyncio.client import connect

    frame = publish_frame().decode()
    slots = asyncio.Semaphore(spec.window)
    async with connect(
        f"ws://127.0.0.1:{spec.endpoint['port']}", max_size=None, compression=None
    ) as ws:
        ready()

        async def receive() -> float:
            for _ in range(spec.count):
                await ws.recv(decode=False)
                slots.release()
            return time.monotonic()

        receiver = asyncio.ensure_future(receive())
        started = time.monotonic()
        for _ in range(spec.count):
            await slots.acquire()
            await ws.send(frame)
        finished = await receiver
    return {"frames": spec.count, "frame_bytes": len(frame), "seconds": finished - started}


async def sqlite_inserts(spec: Spec, ready: Callable[[], None]) -> dict[str, Any]:
    """Insert ``count`` message rows, ``batch`` per transaction, into a fresh database."""
    import aiosqlite

    schema = resources.files("storage.sqlite").joinpath("schema.sql").read_text()
    with tempfile.TemporaryDirectory(prefix="broker-bench-sqlite-") as directory:
        async with aiosqlite.connect(Path(directory) / "bench.db", isolation_level=None) as db:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.executescript(schema)
            ready()
            now = time.time()
            started = time.monotonic()
            for start in range(0, spec.count, spec.batch):
                rows = [
                    (seq + 1, "bench", 0, 0, 0, 0, now, 0.0, 0.0, 0.0, 1024, body(seq, now),
                     None, None, None, None, 0.0)
                    for seq in range(start, min(spec.count, start + spec.batch))
                ]  # fmt: skip
                await db.execute("BEGIN IMMEDIATE")
                await db.executemany(_INSERT, rows)
                await db.execute("COMMIT")
            seconds = time.monotonic() - started
    return {"rows": spec.count, "batch": spec.batch, "seconds": seconds}


ROLES = {
    "echo_server": echo_server,
    "echo_client": echo_client,
    "sqlite_inserts": sqlite_inserts,
}


def ws_echo(plan: Plan) -> dict[str, Any]:
    """One WebSocket echo run of ``plan.count`` frames (server and client processes)."""
    port = free_port()
    with Workers() as workers:
        module = __name__
        server = workers.start(
            Spec(module=module, role="echo_server", endpoint={"port": port}, until_stop=True)
        )
        server.wait_ready(60)
        client = workers.start(
            Spec(
                module=module,
                role="echo_client",
                endpoint={"port": port},
                count=plan.count,
                window=plan.window,
                timeout=plan.timeout(),
            )
        )
        echoed = client.result()
        server.stop()
        server.result()
    return {
        "msgs_per_s": echoed["frames"] / echoed["seconds"],
        "frame_bytes": echoed["frame_bytes"],
    }


def sqlite_run(plan: Plan, batch: int = 500) -> dict[str, Any]:
    """One SQLite run of ``plan.count`` rows in batches of ``batch``."""
    with Workers() as workers:
        worker = workers.start(
            Spec(
                module=__name__,
                role="sqlite_inserts",
                count=plan.count,
                batch=batch,
                timeout=plan.timeout(),
            )
        )
        inserted = worker.result()
    return {"msgs_per_s": inserted["rows"] / inserted["seconds"], "batch": batch}

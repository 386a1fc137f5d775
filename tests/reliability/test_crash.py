"""Crash safety: the `benchmarks.crash` harness with small counts, and the regressions it found.

The harness runs the broker as a subprocess under WebSocket and REST load and
``kill -9``s it at random moments (see its docstring for the checker). Here
it runs three kills with a few thousand messages once per module; each test
asserts one of the promises on that run. The seed is random per run and
printed with every failure, so ``python -m benchmarks.crash --seed S``
replays its kill moments.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.asyncio.client import connect

from benchmarks.crash import CrashConfig, CrashReport, run_crash
from tests.conftest import MS, ServerProcess, login

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashReport]:
    """One harness run: three kills under load, about 1,500 publishes per run."""
    config = CrashConfig(
        runs=3, messages=1500, rate=1500.0, min_s=0.3, max_s=1.2, startup_kills=1,
        data_dir=tmp_path_factory.mktemp("crash"),
    )  # fmt: skip
    result = asyncio.run(run_crash(config))
    print("\n".join(result.lines()))
    yield result


def _why(report: CrashReport) -> str:
    return "\n".join(report.lines())


def test_the_harness_killed_the_broker_under_load(report: CrashReport) -> None:
    """Three runs were killed with publishes confirmed over both WebSocket and REST."""
    assert report.runs == 3, _why(report)
    assert report.confirmed_ws > 0, _why(report)
    assert report.confirmed_rest > 0, _why(report)


def test_no_confirmed_publish_is_lost(report: CrashReport) -> None:
    """Every publish confirmed before a kill -9 is delivered at least once, with its id."""
    assert report.lost == 0, _why(report)


def test_nothing_is_delivered_that_was_not_published(report: CrashReport) -> None:
    """Every delivery belongs to a publish that was sent, under one id that names nothing else."""
    assert report.phantoms == 0, _why(report)
    assert report.ids_reused == 0, _why(report)


def test_every_duplicate_has_a_cause_and_is_marked(report: CrashReport) -> None:
    """Redeliveries come only from nacks, unacked deliveries or acks lost in a crash, marked."""
    assert not report.violations, _why(report)


def test_queue_counts_agree_with_the_messages(report: CrashReport) -> None:
    """After every restart and after the drain, the queue's counts match the stored messages."""
    assert not report.count_errors, _why(report)


async def _publish_over_ws(url: str, token: str) -> int:
    """Subscribe and publish on one WebSocket; return the id of the message pushed back."""
    async with connect(
        f"{url.replace('http', 'ws')}/ws",
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=5000 * MS,
    ) as ws:
        await ws.send(json.dumps({"op": "subscribe", "queue": "ids", "prefetch": 1, "ref": 1}))
        await ws.send(json.dumps({"op": "publish", "queue": "ids", "content": 1, "ref": 2}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["op"] == "deliver":
                return int(frame["message_id"])


async def test_a_message_id_seen_before_a_kill_is_never_reused(
    tmp_path: Path, server_process_factory: Any
) -> None:
    """An id pushed to a consumer before its batch committed names no other message after it."""
    data = tmp_path / "data"
    setup: ServerProcess = server_process_factory(data)
    await setup.start()
    token = (await login(setup.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=setup.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        assert (await http.post("/queues", json={"name": "ids"})).status_code == 201
    setup.terminate()
    # Batches now wait a minute before committing: the publish is pushed, never committed.
    lingering: ServerProcess = server_process_factory(data, BROKER_FLUSH_INTERVAL_MS="60000")
    await lingering.start()
    seen = await _publish_over_ws(lingering.url, token)
    lingering.kill()
    again: ServerProcess = server_process_factory(data)
    await again.start()
    async with httpx.AsyncClient(
        base_url=again.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        response = await http.post("/queues/ids/messages", json={"content": 2})
    assert response.status_code == 201, response.text
    assert response.json()["message_id"] > seen

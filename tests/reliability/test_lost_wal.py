"""A write-ahead log lost after a kill -9 is not silent: the broker refuses to start on it.

To lose committed writes for sure, a reader process pins a snapshot of the
database while the broker publishes: checkpoints can't copy the frames
committed after it into the database file, so they live only in the WAL.
The broker and the reader are then ``kill -9``ed and the WAL truncated or
zeroed, as a careless copy or a faulty disk would leave it.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from storage.sqlite.watermark import read_watermark, watermark_path
from tests.conftest import MS, BrokerServer, ServerProcess, login, make_settings

if TYPE_CHECKING:
    from collections.abc import Iterator

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "datadir-0.1.0"

_PIN = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN')\n"
    "db.execute('SELECT count(*) FROM messages').fetchall()\n"
    "print('pinned', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def pins() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Reader processes pinning a snapshot; killed at the end."""
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for process in made:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


async def _publish(url: str, token: str, queue: str, count: int) -> list[int]:
    """Create ``queue`` and publish ``count`` messages, each confirmed; their ids."""
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        assert (await http.post("/queues", json={"name": queue})).status_code == 201
        ids = []
        for i in range(count):
            response = await http.post(f"/queues/{queue}/messages", json={"content": i})
            assert response.status_code == 201, response.text
            ids.append(response.json()["message_id"])
    return ids


def _checkpoint(database: Path) -> None:
    """Copy the whole WAL into the database file now (what is there survives the damage).

    The broker's own checkpointer may be running one at that moment (busy):
    then try again, a bounded number of times.
    """
    last: tuple[int, int, int] | None = None
    with closing(sqlite3.connect(database)) as db:
        for _ in range(200):
            busy, log, done = last = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy == 0 and log == done:
                return
            time.sleep(10 * MS)
    raise AssertionError(f"the WAL could not be checkpointed: {last}")


async def _lose_the_wal(
    data: Path, server_process_factory: Any, pins: list[subprocess.Popen[bytes]], damage: str
) -> tuple[list[int], list[int]]:
    """Publish to ``early``, pin, publish to ``late``, kill -9 and damage the WAL.

    Returns the ids published to ``early`` (kept) and to ``late`` (lost).
    """
    broker: ServerProcess = server_process_factory(data)
    await broker.start()
    token = (await login(broker.url))["access_token"]
    early = await _publish(broker.url, token, "early", 3)
    database = data / "broker.db"
    _checkpoint(database)
    pin = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, "-c", _PIN, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    pins.append(pin)
    assert pin.stdout is not None
    assert pin.stdout.readline() == b"pinned\n"
    late = await _publish(broker.url, token, "late", 5)
    broker.kill()
    pin.send_signal(signal.SIGKILL)
    pin.wait()
    wal = data / "broker.db-wal"
    size = wal.stat().st_size
    assert size > 0
    if damage == "truncated":
        wal.write_bytes(b"")
    else:
        wal.write_bytes(bytes(size))
    return early, late


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
async def test_a_lost_wal_stops_the_start_naming_what_is_missing(
    tmp_path: Path, server_process_factory: Any, pins: list[Any], damage: str
) -> None:
    """A WAL truncated or zeroed after a kill -9: serve exits non-zero, naming the lost ids."""
    data = tmp_path / "data"
    early, late = await _lose_the_wal(data, server_process_factory, pins, damage)
    again: ServerProcess = server_process_factory(data)
    with pytest.raises(RuntimeError) as caught:
        await again.start()
    message = str(caught.value)
    assert "server exited with 1" in message
    assert f"its last message id is {max(early)} but ids up to {max(late)} were committed" in (
        message
    )
    assert f"({max(late) - max(early)} ids missing;" in message
    assert "--accept-data-loss" in message


async def test_accepting_the_loss_serves_what_is_left_and_says_what_was_lost(
    tmp_path: Path, server_process_factory: Any, pins: list[Any]
) -> None:
    """With --accept-data-loss the broker starts, logs the loss and never reuses a lost id."""
    data = tmp_path / "data"
    early, late = await _lose_the_wal(data, server_process_factory, pins, "truncated")
    accepting: ServerProcess = server_process_factory(data, BROKER_ACCEPT_DATA_LOSS="1")
    await accepting.start()
    token = (await login(accepting.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=accepting.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        queues = {queue["name"]: queue for queue in (await http.get("/queues")).json()}
        assert (await http.post("/queues", json={"name": "after"})).status_code == 201
        response = await http.post("/queues/after/messages", json={"content": "new"})
    assert response.status_code == 201, response.text
    assert response.json()["message_id"] > max(late)
    assert set(queues) == {"early"}
    assert queues["early"]["pending"] == len(early)
    assert accepting.process is not None
    accepting.process.send_signal(signal.SIGTERM)
    accepting.process.wait()
    assert accepting.process.stderr is not None
    logged = accepting.process.stderr.read().decode()
    assert "committed writes lost" in logged
    assert f"'committed_id': {max(late)}, 'missing_ids': {max(late) - max(early)}" in logged


async def test_a_start_after_accepting_the_loss_needs_no_flag(
    tmp_path: Path, server_process_factory: Any, pins: list[Any]
) -> None:
    """Once a loss was accepted, the next start (without the flag) is a normal one."""
    data = tmp_path / "data"
    await _lose_the_wal(data, server_process_factory, pins, "zeroed")
    accepting: ServerProcess = server_process_factory(data, BROKER_ACCEPT_DATA_LOSS="1")
    await accepting.start()
    accepting.terminate()
    again: ServerProcess = server_process_factory(data)
    await again.start()


async def test_a_kill_9_with_an_intact_wal_starts_without_alarm(
    tmp_path: Path, server_process_factory: Any
) -> None:
    """A plain kill -9 restart keeps every confirmed message and raises no alarm."""
    data = tmp_path / "data"
    broker: ServerProcess = server_process_factory(data)
    await broker.start()
    token = (await login(broker.url))["access_token"]
    ids = await _publish(broker.url, token, "q", 5)
    broker.kill()
    assert read_watermark(watermark_path(data / "broker.db")) == max(ids)
    again: ServerProcess = server_process_factory(data)
    await again.start()
    async with httpx.AsyncClient(
        base_url=again.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        queue = (await http.get("/queues/q")).json()
    assert queue["pending"] == len(ids)


async def test_a_clean_restart_starts_without_alarm(tmp_path: Path) -> None:
    """A clean stop and start on the same data dir raises no alarm; the watermark is 0600."""
    server = BrokerServer(make_settings(tmp_path / "data"))
    await server.start()
    token = (await login(server.url))["access_token"]
    ids = await _publish(server.url, token, "q", 3)
    await server.restart()
    await server.stop()
    path = watermark_path(server.settings.sqlite_path)
    assert read_watermark(path) == max(ids)
    assert path.stat().st_mode & 0o777 == 0o600


async def test_a_data_dir_without_a_watermark_starts_and_gets_one(tmp_path: Path) -> None:
    """A data dir from 0.1.0 (no watermark file) starts normally and gets one at its last id."""
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data, ignore=shutil.ignore_patterns("expected.json"))
    server = BrokerServer(make_settings(data, admin_password=None))
    await server.start()
    await server.stop()
    assert read_watermark(watermark_path(data / "broker.db")) == 9

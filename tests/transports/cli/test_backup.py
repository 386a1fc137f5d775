"""``broker backup DEST``: a consistent copy of a running broker's data that a broker starts on.

The broker runs as its own process and keeps publishing, with confirms, while
``broker backup`` (another process) copies its data dir; a second broker is
then started on the copy.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import MS, REPO, ServerProcess, login

if TYPE_CHECKING:
    from pathlib import Path


async def _broker(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m transports ARGV`` to its end; exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "transports", *argv,
        cwd=REPO, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60_000 * MS)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Publisher:
    """Publishes to one queue, one confirmed message after another, until stopped."""

    def __init__(self, http: httpx.AsyncClient, queue: str, limit: int, warm: int) -> None:
        self.http = http
        self.queue = queue
        self.limit = limit
        self.confirmed: list[int] = []
        self.stopped = asyncio.Event()
        self.warm = warm
        self.warmed = asyncio.Event()

    async def run(self) -> None:
        for i in range(self.limit):
            if self.stopped.is_set():
                return
            response = await self.http.post(f"/queues/{self.queue}/messages", json={"content": i})
            assert response.status_code == 201, response.text
            self.confirmed.append(response.json()["message_id"])
            if len(self.confirmed) >= self.warm:
                self.warmed.set()


async def _consume_all(http: httpx.AsyncClient, queue: str) -> set[int]:
    ids: set[int] = set()
    while True:
        response = await http.get(f"/queues/{queue}/messages/consume", params={"max": 100})
        if response.status_code == 204:
            return ids
        assert response.status_code == 200, response.text
        ids.update(m["message_id"] for m in response.json()["messages"])


@pytest.fixture
async def running(tmp_path: Path, server_process_factory: Any) -> ServerProcess:
    """A broker process with a queue, a user ``alice`` and some messages."""
    broker: ServerProcess = server_process_factory(tmp_path / "data")
    await broker.start()
    token = (await login(broker.url))["access_token"]
    async with httpx.AsyncClient(
        base_url=broker.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        assert (await http.post("/queues", json={"name": "q"})).status_code == 201
        alice = {
            "username": "alice",
            "password": "alice-password",
            "permissions": [{"pattern": "q", "actions": ["publish", "consume"]}],
        }
        assert (await http.post("/users", json=alice)).status_code == 201
    return broker


async def test_a_backup_under_publishing_holds_every_message_confirmed_before_it(
    tmp_path: Path, running: ServerProcess, server_process_factory: Any
) -> None:
    """Publishes continue during the backup; a broker on the copy serves all confirmed before."""
    token = (await login(running.url))["access_token"]
    dest = tmp_path / "backup"
    async with httpx.AsyncClient(
        base_url=running.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        publisher = Publisher(http, "q", limit=5000, warm=50)
        task = asyncio.create_task(publisher.run())
        await asyncio.wait_for(publisher.warmed.wait(), 30_000 * MS)
        before = list(publisher.confirmed)
        code, out, err = await _broker("backup", str(dest), "--data-dir", str(running.data_dir))
        during = len(publisher.confirmed) - len(before)
        publisher.stopped.set()
        await task
    assert code == 0, err
    assert f"backup written to {dest}" in out
    assert during > 0, "publishes went on during the backup"
    copy: ServerProcess = server_process_factory(dest)
    await copy.start()
    # The original's signing key came along: its token is good on the copy.
    async with httpx.AsyncClient(
        base_url=copy.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        restored = await _consume_all(http, "q")
    assert set(before) <= restored
    assert restored <= set(publisher.confirmed)
    await login(copy.url, "alice", "alice-password")


async def test_a_backup_is_private(tmp_path: Path, running: ServerProcess) -> None:
    """The copy's directory is 0700 and its files 0600."""
    dest = tmp_path / "backup"
    code, _, err = await _broker("backup", str(dest), "--data-dir", str(running.data_dir))
    assert code == 0, err
    assert dest.stat().st_mode & 0o777 == 0o700
    files = [path for path in dest.rglob("*") if path.is_file()]
    assert {path.name for path in files} >= {"broker.db", "jwt.secret"}
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path


async def test_a_backup_never_overwrites_without_force(
    tmp_path: Path, running: ServerProcess
) -> None:
    """An existing DEST is refused, left as it was; --force replaces it with a copy."""
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    code, _, err = await _broker("backup", str(dest), "--data-dir", str(running.data_dir))
    assert code == 1
    assert f"{dest} exists: pass --force to replace it" in err
    assert [path.name for path in dest.iterdir()] == ["keep"]
    code, _, err = await _broker(
        "backup", str(dest), "--data-dir", str(running.data_dir), "--force"
    )
    assert code == 0, err
    assert not (dest / "keep").exists()
    assert (dest / "broker.db").is_file()
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


async def test_a_postgres_broker_is_pointed_to_pg_dump(tmp_path: Path) -> None:
    """With PostgreSQL storage the command refuses, naming pg_dump, and creates nothing."""
    dest = tmp_path / "backup"
    code, _, err = await _broker(
        "backup", str(dest), "--storage", "postgresql://nobody@127.0.0.1:1/none"
    )
    assert code == 1
    assert "back up PostgreSQL with pg_dump" in err
    assert not dest.exists()

"""A really full disk: the database on a small tmpfs that a filler file fills up.

`test_faults` makes SQLite report a full database with ``max_page_count``;
here the file system itself runs out of space under the WAL, as on a real
volume. An error answer must mean "not stored, never will be": once space
is back, the queue holds exactly the confirmed messages, also after a restart.
Mounting needs root; elsewhere these tests skip with their reason.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import MS, BrokerServer, login, make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

DISK_BYTES = 8 * 1024 * 1024
BODY = "x" * 60_000
"""Big enough that a handful of publishes outgrow whatever room the filler left."""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of `DISK_BYTES` mounted for this test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
async def disk_server(tmp_path: Path, small_disk: Path) -> AsyncIterator[BrokerServer]:
    """A broker whose database lives on the small disk (the data dir and logs do not)."""
    settings = make_settings(tmp_path / "data", storage_url=f"sqlite:///{small_disk / 'broker.db'}")
    server = BrokerServer(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _fill(disk: Path) -> Path:
    """Write a filler file until the disk has no room left; return it."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    # Unbuffered: a buffered file would raise ENOSPC again at close, for the
    # part of the last chunk it kept.
    with filler.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    return filler


async def _publish(http: httpx.AsyncClient, tag: str) -> int:
    response = await http.post("/queues/jobs/messages", json={"content": {"tag": tag, "pad": BODY}})
    assert response.status_code in (201, 503), response.text
    return response.status_code


async def _stored_tags(http: httpx.AsyncClient) -> list[str]:
    response = await http.get("/queues/jobs/messages", params={"status": "pending", "limit": 1000})
    assert response.status_code == 200, response.text
    return [message["content"]["tag"] for message in response.json()["messages"]]


async def _admin(server: BrokerServer) -> httpx.AsyncClient:
    token = (await login(server.url))["access_token"]
    return httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def test_publishes_refused_by_a_full_disk_are_never_stored(
    disk_server: BrokerServer, small_disk: Path
) -> None:
    """On a full file system publishes get 503; once space is back only the confirmed ones exist."""
    confirmed: list[str] = []
    refused: list[str] = []
    async with await _admin(disk_server) as http:
        assert (await http.post("/queues", json={"name": "jobs"})).status_code == 201
        assert await _publish(http, "before") == 201
        confirmed.append("before")
        filler = _fill(small_disk)
        for n in range(60):
            tag = f"during-{n}"
            (confirmed if await _publish(http, tag) == 201 else refused).append(tag)
            if len(refused) >= 3:
                break
        assert refused, "the disk never filled up"
        filler.unlink()
        for _ in range(400):
            if (await http.get("/health")).status_code == 200:
                break
            await asyncio.sleep(25 * MS)
        assert await _publish(http, "after") == 201
        confirmed.append("after")
        assert sorted(await _stored_tags(http)) == sorted(confirmed)
    await disk_server.restart()
    async with await _admin(disk_server) as http:
        assert sorted(await _stored_tags(http)) == sorted(confirmed)


async def test_a_full_disk_answers_with_a_reason_and_health_says_degraded(
    disk_server: BrokerServer, small_disk: Path
) -> None:
    """The refusal is 503 ``storage_unavailable`` naming the cause; /health is degraded."""
    async with await _admin(disk_server) as http:
        await http.post("/queues", json={"name": "jobs"})
        filler = _fill(small_disk)
        answer: dict[str, Any] = {}
        for n in range(60):
            response = await http.post(
                "/queues/jobs/messages", json={"content": {"tag": str(n), "pad": BODY}}
            )
            if response.status_code == 503:
                answer = response.json()
                break
        health = await http.get("/health")
        filler.unlink()
    assert answer.get("code") == "storage_unavailable", answer
    assert "full" in answer["detail"].lower() or "disk" in answer["detail"].lower(), answer
    assert health.status_code == 503

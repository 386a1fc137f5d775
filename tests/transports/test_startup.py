"""Starting `broker serve`: one process per data dir, the port first, no trace of a failure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import httpx

from tests.conftest import MS, REPO, free_port

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import ServerProcess

LOCK_FILE = "broker.lock"
"""The file in the data dir that a serving broker holds locked (with its pid inside)."""
EXIT_S = 20_000 * MS
"""How long a start that must fail may take to exit."""


def _env(data_dir: Path, port: int) -> dict[str, str]:
    """The environment of a broker on ``data_dir`` and ``port`` with no admin password set."""
    env = {
        **os.environ,
        "BROKER_HOST": "127.0.0.1",
        "BROKER_PORT": str(port),
        "BROKER_DATA_DIR": str(data_dir),
        "BROKER_TLS": "false",
        "BROKER_LOG_LEVEL": "WARNING",
    }
    # No BROKER_ADMIN_PASSWORD: a start that went too far would print a generated one.
    env.pop("BROKER_ADMIN_PASSWORD", None)
    return env


def _serve(data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    """Run ``broker serve`` on ``data_dir`` and ``port``; return once it exits."""
    return subprocess.run(
        [sys.executable, "-m", "transports", "serve", "--no-tls"],
        cwd=REPO,
        env=_env(data_dir, port),
        capture_output=True,
        text=True,
        timeout=EXIT_S,
        check=False,
    )


def _snapshot(data_dir: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``data_dir`` with its size, mtime and bytes (the lock file left out)."""
    files = {}
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and path.name != LOCK_FILE:
            stat = path.stat()
            files[str(path.relative_to(data_dir))] = (
                stat.st_size,
                stat.st_mtime_ns,
                path.read_bytes(),
            )
    return files


def _taken_port() -> socket.socket:
    """A socket listening on a free port of 127.0.0.1 (close it when done)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_a_second_broker_on_a_live_data_dir_exits_naming_the_holder(
    server_process_factory: Any,
) -> None:
    """A second start on a live data dir exits non-zero naming the pid; the first serves on."""
    first: ServerProcess = server_process_factory()
    await first.start()
    assert first.process is not None
    second = _serve(first.data_dir, free_port())
    assert second.returncode != 0
    assert f"data dir {first.data_dir.absolute()} is in use (pid {first.process.pid})" in (
        second.stderr
    )
    assert "Traceback" not in second.stderr
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{first.url}/health")).status_code == 200


async def test_a_restart_after_kill_9_takes_the_data_dir(server_process_factory: Any) -> None:
    """kill -9 releases the data dir: the next start on it serves."""
    first: ServerProcess = server_process_factory()
    await first.start()
    first.kill()
    again: ServerProcess = server_process_factory(first.data_dir)
    await again.start()
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{again.url}/health")).status_code == 200


async def test_a_start_on_a_taken_port_changes_nothing_in_a_used_data_dir(
    server_process_factory: Any,
) -> None:
    """A start whose port is taken exits non-zero and leaves every file as it was."""
    first: ServerProcess = server_process_factory()
    await first.start()
    first.terminate()
    before = _snapshot(first.data_dir)
    with _taken_port() as taken:
        failed = _serve(first.data_dir, taken.getsockname()[1])
    assert failed.returncode != 0
    assert "address already in use" in failed.stderr.lower()
    assert "Traceback" not in failed.stderr
    assert _snapshot(first.data_dir) == before


async def test_a_start_on_a_taken_port_creates_only_the_lock_in_a_new_data_dir(
    tmp_path: Path,
) -> None:
    """On a new data dir, a start whose port is taken makes the dir and lock file, no admin."""
    data_dir = tmp_path / "data"
    with _taken_port() as taken:
        failed = _serve(data_dir, taken.getsockname()[1])
    assert failed.returncode != 0
    assert "password" not in failed.stdout.lower()
    assert sorted(path.name for path in data_dir.iterdir()) == [LOCK_FILE]


async def test_the_start_after_a_failed_one_creates_the_admin_and_prints_its_password(
    tmp_path: Path,
) -> None:
    """A start that failed on a taken port created no admin: the next start does, and says so."""
    data_dir = tmp_path / "data"
    with _taken_port() as taken:
        assert _serve(data_dir, taken.getsockname()[1]).returncode != 0
    port = free_port()
    stdout = tmp_path / "stdout"
    with stdout.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "transports", "serve", "--no-tls"],
            cwd=REPO,
            env=_env(data_dir, port),
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(1000):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                await asyncio.sleep(20 * MS)
        assert "First start: created admin user 'admin'" in stdout.read_text()
    finally:
        process.terminate()
        process.wait(timeout=EXIT_S)

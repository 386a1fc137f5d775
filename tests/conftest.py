"""Fixtures shared by the whole suite: a real broker server on 127.0.0.1 and clients.

Every timeout is a multiple of `MS`, scaled by ``BROKER_TEST_TIMEOUT_FACTOR``
on slow machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from broker_core.settings import Settings
from transports.app import create_app
from transports.protocols import http_protocol
from transports.ws.direct import BrokerWebSocketProtocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

MS = 0.001 * float(os.environ.get("BROKER_TEST_TIMEOUT_FACTOR", "1"))
"""One millisecond of test time; every timeout is a multiple of it."""

ADMIN_PASSWORD = "admin-password-for-tests"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of a test broker: plain HTTP on 127.0.0.1, fast hashing of nothing else."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "data_dir": data_dir,
        "tls": False,
        "admin_password": ADMIN_PASSWORD,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.contextmanager
def _keep_signals() -> Iterator[None]:
    """Stands in for uvicorn's ``Server.capture_signals``: install no signal handler."""
    yield


class BrokerServer:
    """A broker served by uvicorn in this process, on a socket bound to 127.0.0.1."""

    ws_protocol: Any = BrokerWebSocketProtocol
    """uvicorn's ``ws=``: ours (with the direct data path) unless a test picks another."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def ctx(self) -> Any:
        """The running `BrokerContext`."""
        return self.app.state.ctx

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # Created as TCP explicitly: asyncio sets TCP_NODELAY only then.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="on",
            ws=self.ws_protocol,
            http=http_protocol(self.settings),
            ws_max_size=self.settings.ws_max_frame_bytes,
            ws_ping_interval=self.settings.ws_heartbeat_s,
            ws_ping_timeout=self.settings.ws_heartbeat_timeout_s,
        )
        self._server = uvicorn.Server(config)
        # The test process keeps its own signal handlers (Ctrl-C stops pytest, not one server).
        self._server.capture_signals = _keep_signals  # type: ignore[method-assign]
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + 10_000 * MS
        while not self._server.started:
            if self._task.done():
                self._task.result()
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            await asyncio.sleep(5 * MS)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = None
            self._task = None

    async def restart(self) -> None:
        """Stop cleanly and start a fresh app on the same data dir and port."""
        await self.stop()
        self.app = create_app(self.settings)
        await self.start()


async def login(
    url: str, username: str = "admin", password: str = ADMIN_PASSWORD
) -> dict[str, Any]:
    """Log in over REST; return the token pair."""
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post(
            "/auth/token", json={"username": username, "password": password}
        )
        response.raise_for_status()
        pair: dict[str, Any] = response.json()
        return pair


async def make_user(
    client: httpx.AsyncClient, server: BrokerServer, name: str, permissions: list[dict[str, Any]]
) -> str:
    """Create a user (password ``<name>-password``) with ``permissions``; its access token."""
    password = f"{name}-password"
    response = await client.post(
        "/users", json={"username": name, "password": password, "permissions": permissions}
    )
    assert response.status_code == 201, response.text
    return str((await login(server.url, name, password))["access_token"])


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the server's settings."""
    return {}


@pytest.fixture
async def server(tmp_path: Path, settings_overrides: dict[str, Any]) -> AsyncIterator[BrokerServer]:
    """A running broker with a fresh data dir."""
    broker = BrokerServer(make_settings(tmp_path / "data", **settings_overrides))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
async def admin_token(server: BrokerServer) -> str:
    """An admin access token for ``server``."""
    return str((await login(server.url))["access_token"])


@pytest.fixture
async def client(server: BrokerServer, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``server`` authenticated as the admin."""
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=10
    ) as http:
        yield http


class ServerProcess:
    """A broker run as ``python -m transports serve`` in a subprocess (for kill -9 tests)."""

    def __init__(self, data_dir: Path, port: int | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "BROKER_HOST": "127.0.0.1",
            "BROKER_PORT": str(self.port),
            "BROKER_DATA_DIR": str(data_dir),
            "BROKER_TLS": "false",
            "BROKER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BROKER_LOG_LEVEL": "WARNING",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def tls(self) -> bool:
        """Whether it serves HTTPS (``BROKER_TLS=true``: its self-signed certificate)."""
        return self.env["BROKER_TLS"].lower() == "true"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "transports", "serve"],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20_000 * MS
        # Only its health is asked here: the certificate is the test's to check.
        async with httpx.AsyncClient(verify=not self.tls) as http:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"server exited with {self.process.returncode}: {err}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError("server process did not become healthy")
                await asyncio.sleep(20 * MS)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no flush."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self._close_pipes()

    def terminate(self) -> None:
        """A graceful stop (SIGTERM)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def server_process_factory(tmp_path: Path) -> Iterator[Any]:
    """Make `ServerProcess`es that are stopped at the end of the test."""
    made: list[ServerProcess] = []

    def make(data_dir: Path | None = None, **env: str) -> ServerProcess:
        process = ServerProcess(data_dir or tmp_path / "data", None, **env)
        made.append(process)
        return process

    yield make
    for process in made:
        process.terminate()

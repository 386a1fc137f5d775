"""Shared benchmark plumbing: a broker in its own process, results as JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["RESULTS", "BrokerProcess", "save"]

RESULTS = Path(__file__).resolve().parent / "results"
PASSWORD = "benchmark-admin-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerProcess:
    """``python -m transports serve`` with TLS off and a fresh data dir, as users run it."""

    def __init__(self, **env: str) -> None:
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="broker-bench-")
        self.data_dir = Path(self._dir.name)
        self.env = {
            **os.environ,
            "BROKER_HOST": "127.0.0.1",
            "BROKER_PORT": str(self.port),
            "BROKER_DATA_DIR": str(self.data_dir),
            "BROKER_TLS": "false",
            "BROKER_ADMIN_PASSWORD": PASSWORD,
            "BROKER_LOG_LEVEL": "WARNING",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BrokerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "transports", "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError("broker did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._dir.cleanup()

    def token(self) -> str:
        """An admin access token."""
        response = httpx.post(
            f"{self.url}/auth/token", json={"username": "admin", "password": PASSWORD}
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


def save(name: str, results: dict[str, Any]) -> Path:
    """Write ``results`` with the machine's description to ``results/<name>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path

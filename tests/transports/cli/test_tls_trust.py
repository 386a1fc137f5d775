"""How ``broker`` trusts an HTTPS broker: pinning its self-signed certificate, ``--insecure``.

The broker runs as ``python -m transports serve`` with TLS on and its
self-signed certificate; a new certificate is made by removing ``tls/`` from
its data dir and starting it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, MS, REPO, free_port
from tests.transports.cli.cli_helpers import Cli
from transports.cli_profiles import fingerprint

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class TlsBroker:
    """A broker process serving HTTPS with its self-signed certificate."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def fingerprint(self) -> str:
        return fingerprint((self.data_dir / "tls" / "cert.pem").read_text())

    async def start(self) -> None:
        env = {
            **os.environ,
            "BROKER_HOST": "127.0.0.1",
            "BROKER_PORT": str(self.port),
            "BROKER_DATA_DIR": str(self.data_dir),
            "BROKER_TLS": "true",
            "BROKER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BROKER_LOG_LEVEL": "WARNING",
        }
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "transports", "serve"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        deadline = time.monotonic() + 20_000 * MS
        async with httpx.AsyncClient(verify=context) as http:
            while True:
                assert self.process.poll() is None, "the broker exited"
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                assert time.monotonic() < deadline, "the broker did not start"
                await asyncio.sleep(50 * MS)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def new_certificate(self) -> None:
        """Restart with a freshly made self-signed certificate (as a new data dir would)."""
        self.stop()
        for name in ("cert.pem", "key.pem"):
            (self.data_dir / "tls" / name).unlink()
        await self.start()


@pytest.fixture
async def tls_broker(tmp_path: Path) -> AsyncIterator[TlsBroker]:
    broker = TlsBroker(tmp_path / "data")
    await broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "config", tmp_path)


async def test_first_login_pins_the_certificate_and_shows_its_fingerprint(
    cli: Cli, tls_broker: TlsBroker
) -> None:
    """Trust on first use: the fingerprint is shown, and later commands need no flag."""
    run = await cli.login("--url", tls_broker.url)
    assert tls_broker.fingerprint() in run.err
    assert "pinned in profile 'default'" in run.err
    profile = json.loads((cli.config_dir / "profiles.json").read_text())["default"]
    assert profile["trust"] == "pinned"
    assert fingerprint(profile["certificate"]) == tls_broker.fingerprint()
    await cli.ok("queues", "create", "jobs")
    assert (await cli.ok("publish", "jobs", "1")).lines()[0]["queue"] == "jobs"


async def test_a_changed_certificate_is_refused_loudly_until_repinned(
    cli: Cli, tls_broker: TlsBroker
) -> None:
    """A new certificate stops every command (REST and WebSocket) with both fingerprints."""
    await cli.login("--url", tls_broker.url)
    old = tls_broker.fingerprint()
    await tls_broker.new_certificate()
    new = tls_broker.fingerprint()
    assert new != old
    for argv in (("queues",), ("publish", "jobs", "1"), ("login", "--password-stdin")):
        run = await cli(*argv, stdin=ADMIN_PASSWORD + "\n")
        assert run.code == 1, argv
        assert "THE BROKER'S CERTIFICATE HAS CHANGED" in run.err, run.err
        assert f"pinned:    SHA256 {old}" in run.err
        assert f"presented: SHA256 {new}" in run.err
        assert "--repin" in run.err
    run = await cli.login("--repin")
    assert new in run.err
    await cli.ok("queues")


async def test_a_wrong_expected_fingerprint_pins_nothing(cli: Cli, tls_broker: TlsBroker) -> None:
    """``--fingerprint`` that doesn't match refuses before the password is sent."""
    run = await cli(
        "login", "--url", tls_broker.url, "--password-stdin", "--fingerprint", "AB:CD",
        stdin=ADMIN_PASSWORD + "\n",
    )  # fmt: skip
    assert run.code == 1 and "nothing was sent or pinned" in run.err
    assert not (cli.config_dir / "profiles.json").exists()
    await cli.login("--url", tls_broker.url, "--fingerprint", tls_broker.fingerprint())


async def test_insecure_is_remembered(cli: Cli, tls_broker: TlsBroker) -> None:
    """``login --insecure`` is kept: later commands accept any certificate, a new one too."""
    await cli.login("--url", tls_broker.url, "--insecure")
    await tls_broker.new_certificate()
    await cli.ok("queues")


async def test_without_a_login_the_hint_names_the_way_to_trust(
    cli: Cli, tls_broker: TlsBroker
) -> None:
    """An unverifiable certificate with a password in the environment says how to trust it."""
    run = await cli("queues", "--url", tls_broker.url, BROKER_PASSWORD=ADMIN_PASSWORD)
    assert run.code == 1
    assert f"broker login --url {tls_broker.url}` pins its certificate" in run.err

"""Running ``broker`` as a user does: a subprocess with its own config dir, on a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.conftest import ADMIN_PASSWORD, MS

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Cli", "Run"]


@dataclass
class Run:
    """What one ``broker`` command did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """Standard output parsed as one JSON document."""
        return json.loads(self.out)

    def lines(self) -> list[Any]:
        """Standard output parsed as JSON lines."""
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


class Cli:
    """Runs ``python -m transports ARGV`` with a private ``BROKER_CONFIG_DIR``."""

    def __init__(self, config_dir: Path, cwd: Path, **env: str) -> None:
        self.config_dir = config_dir
        self.cwd = cwd
        base = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        self.env = {**base, "BROKER_CONFIG_DIR": str(config_dir), **env}

    async def __call__(self, *argv: str, stdin: str | None = None, **env: str) -> Run:
        """Run one command to its end."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "transports", *argv,
            cwd=self.cwd, env={**self.env, **env},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else b""), 60_000 * MS
        )
        assert process.returncode is not None
        return Run(process.returncode, out.decode(), err.decode())

    async def ok(self, *argv: str, stdin: str | None = None) -> Run:
        """Run a command that must succeed."""
        run = await self(*argv, stdin=stdin)
        assert run.code == 0, f"broker {' '.join(argv)}: {run.code}\n{run.err}"
        return run

    async def login(self, *argv: str) -> Run:
        """``broker login --password-stdin ARGV`` as the admin."""
        return await self.ok("login", "--password-stdin", *argv, stdin=ADMIN_PASSWORD + "\n")

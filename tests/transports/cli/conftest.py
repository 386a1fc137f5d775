"""Fixtures of the CLI tests: ``broker`` as a subprocess with a private config dir."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.transports.cli.cli_helpers import Cli

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import BrokerServer


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """``broker`` with a private config dir and no ``BROKER_*`` variables."""
    return Cli(tmp_path / "config", tmp_path)


@pytest.fixture
async def logged_in(cli: Cli, server: BrokerServer) -> Cli:
    """``cli`` after ``broker login --url`` to ``server`` (a non-default URL)."""
    await cli.login("--url", server.url)
    return cli

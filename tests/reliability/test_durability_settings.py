"""Durability settings: ``BROKER_SQLITE_SYNCHRONOUS`` reaches the database connection.

``NORMAL`` (the default) keeps every commit through a process crash, with
fsyncs at checkpoints; ``FULL`` fsyncs each batch's body segment and the WAL
at every commit, for power loss (README, Durability). The setting is read
back from SQLite itself on the broker's own connection: ``PRAGMA
synchronous`` is 1 for NORMAL and 2 for FULL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker_core.settings import Settings
from tests.conftest import ADMIN_PASSWORD, BrokerServer

if TYPE_CHECKING:
    from pathlib import Path


def _settings(data_dir: Path, environ: dict[str, str]) -> Settings:
    """Settings as ``broker serve`` builds them, from this environment."""
    return Settings.from_env(
        {
            "BROKER_HOST": "127.0.0.1",
            "BROKER_PORT": "0",
            "BROKER_DATA_DIR": str(data_dir),
            "BROKER_TLS": "false",
            "BROKER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "BROKER_LOG_LEVEL": "WARNING",
            **environ,
        }
    )


async def _pragma(server: BrokerServer, name: str) -> object:
    # Pragmas such as synchronous are per connection: read the writer's.
    return await server.ctx.storage.writer.call(
        lambda db: db.execute(f"PRAGMA {name}").fetchone()[0]
    )


async def _read_back(data_dir: Path, environ: dict[str, str], name: str) -> object:
    server = BrokerServer(_settings(data_dir, environ))
    await server.start()
    try:
        return await _pragma(server, name)
    finally:
        await server.stop()


async def test_synchronous_full_from_the_environment_is_applied(tmp_path: Path) -> None:
    """BROKER_SQLITE_SYNCHRONOUS=FULL makes PRAGMA synchronous read back 2 (FULL)."""
    environ = {"BROKER_SQLITE_SYNCHRONOUS": "FULL"}
    assert await _read_back(tmp_path / "data", environ, "synchronous") == 2


async def test_synchronous_is_case_insensitive(tmp_path: Path) -> None:
    """BROKER_SQLITE_SYNCHRONOUS=full is FULL too."""
    environ = {"BROKER_SQLITE_SYNCHRONOUS": "full"}
    assert await _read_back(tmp_path / "data", environ, "synchronous") == 2


async def test_synchronous_defaults_to_normal(tmp_path: Path) -> None:
    """Without the variable, PRAGMA synchronous reads back 1 (NORMAL): FULL cost too much."""
    assert await _read_back(tmp_path / "data", {}, "synchronous") == 1


async def test_synchronous_normal_from_the_environment_is_applied(tmp_path: Path) -> None:
    """BROKER_SQLITE_SYNCHRONOUS=NORMAL makes PRAGMA synchronous read back 1 (NORMAL)."""
    environ = {"BROKER_SQLITE_SYNCHRONOUS": "NORMAL"}
    assert await _read_back(tmp_path / "data", environ, "synchronous") == 1


async def test_full_keeps_the_write_ahead_log(tmp_path: Path) -> None:
    """FULL changes when the WAL is synced, not the journal mode: it stays WAL."""
    environ = {"BROKER_SQLITE_SYNCHRONOUS": "FULL"}
    assert await _read_back(tmp_path / "data", environ, "journal_mode") == "wal"

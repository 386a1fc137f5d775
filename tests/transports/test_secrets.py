"""The data dir's secret files (created once, private, stable), and no secret leaves the broker."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD
from transports.secrets import ensure_data_dir, generate_password, load_or_create_secret

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import BrokerServer


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_secret_file_is_private(tmp_path: Path) -> None:
    """A created secret file has mode 0600."""
    path = tmp_path / "jwt-secret"
    load_or_create_secret(path)
    assert _mode(path) == 0o600


def test_secret_is_private_despite_permissive_umask(tmp_path: Path) -> None:
    """Mode 0600 holds whatever the umask."""
    old = os.umask(0)
    try:
        load_or_create_secret(tmp_path / "s")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "s") == 0o600


def test_secret_is_stable_across_calls(tmp_path: Path) -> None:
    """The second call returns the stored secret instead of a new one."""
    path = tmp_path / "jwt-secret"
    assert load_or_create_secret(path) == load_or_create_secret(path)


def test_secret_has_requested_strength(tmp_path: Path) -> None:
    """nbytes random bytes give a URL-safe string of the expected length."""
    secret = load_or_create_secret(tmp_path / "s", nbytes=32)
    assert len(secret) == 43
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_existing_secret_is_read_and_stripped(tmp_path: Path) -> None:
    """A secret written by an operator is used as is, minus the trailing newline."""
    path = tmp_path / "s"
    path.write_text("operator-chosen\n")
    path.chmod(0o600)
    assert load_or_create_secret(path) == "operator-chosen"


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    """An existing world-readable secret file is narrowed to 0600."""
    path = tmp_path / "s"
    path.write_text("value")
    path.chmod(0o644)
    load_or_create_secret(path)
    assert _mode(path) == 0o600


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    """An empty file is refused rather than used as an empty key."""
    path = tmp_path / "s"
    path.touch(mode=0o600)
    with pytest.raises(ValueError, match="empty"):
        load_or_create_secret(path)


def test_no_temporary_file_is_left(tmp_path: Path) -> None:
    """Creation leaves only the secret file behind."""
    load_or_create_secret(tmp_path / "s")
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


def test_data_dir_is_created_private(tmp_path: Path) -> None:
    """A new data dir (and missing parents) is created with mode 0700."""
    path = ensure_data_dir(tmp_path / "a" / "data")
    assert path.is_dir() and path.is_absolute()
    assert _mode(path) == 0o700


def test_existing_data_dir_keeps_its_mode(tmp_path: Path) -> None:
    """An existing data dir is left as the operator set it."""
    path = tmp_path / "data"
    path.mkdir(mode=0o750)
    path.chmod(0o750)
    ensure_data_dir(path)
    assert _mode(path) == 0o750


def test_data_dir_path_taken_by_a_file_is_an_error(tmp_path: Path) -> None:
    """A file where the data dir should be raises NotADirectoryError."""
    path = tmp_path / "data"
    path.touch()
    with pytest.raises(NotADirectoryError):
        ensure_data_dir(path)


def test_generated_passwords_are_long_and_distinct() -> None:
    """Generated passwords have 24 characters and do not repeat."""
    first, second = generate_password(), generate_password()
    assert len(first) == 24
    assert first != second


@pytest.mark.parametrize("settings_overrides", [{"log_level": "DEBUG"}])
async def test_secrets_never_leave_the_broker(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Neither the JWT secret, the admin password nor a token shows in stats, metrics or logs."""
    secret = (server.settings.data_dir / "jwt.secret").read_text().strip()
    token = client.headers["authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        await anonymous.post("/auth/token", json={"username": "admin", "password": "wrong-guess"})
        await anonymous.get("/queues", params={"access_token": token})
    exposed = [
        (await client.get("/stats")).text,
        (await client.get("/metrics")).text,
    ]
    for log in (await client.get("/logs")).json():
        exposed.append((await client.get(f"/logs/{log['name']}")).text)
    exposed.extend(path.read_text() for path in server.settings.logs_dir.glob("*.jsonl"))
    for text in exposed:
        assert secret not in text
        assert ADMIN_PASSWORD not in text
        assert token not in text
        assert "wrong-guess" not in text


async def test_secret_files_are_private(server: BrokerServer) -> None:
    """The generated JWT secret is readable by its owner only."""
    mode = (server.settings.data_dir / "jwt.secret").stat().st_mode & 0o777
    assert mode == 0o600

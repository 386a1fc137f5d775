"""Tests of ``Settings``: defaults, ``BROKER_*`` parsing, overrides and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker_core.settings import Settings


def test_defaults_describe_a_working_single_node() -> None:
    """Settings() has the documented defaults."""
    settings = Settings()
    assert (settings.host, settings.port, settings.tls) == ("0.0.0.0", 8777, True)
    assert settings.data_dir == Path("broker-data")
    assert settings.storage_url is None
    assert settings.refresh_token_ttl_s == 30 * 24 * 3600
    assert settings.max_message_bytes == 256 * 1024
    assert settings.body_cache_bytes == 48 * 1024 * 1024
    assert settings.allowed_origins == ()


def test_paths_derive_from_data_dir() -> None:
    """sqlite_path and logs_dir live in the data dir."""
    settings = Settings(data_dir=Path("/srv/broker"))
    assert settings.sqlite_path == Path("/srv/broker/broker.db")
    assert settings.logs_dir == Path("/srv/broker/logs")


def test_from_env_converts_each_type() -> None:
    """BROKER_* values are parsed as int, float, bool, Path, str and comma lists."""
    settings = Settings.from_env(
        {
            "BROKER_PORT": "9000",
            "BROKER_FLUSH_INTERVAL_MS": "5.5",
            "BROKER_TLS": "off",
            "BROKER_DATA_DIR": "/var/lib/broker",
            "BROKER_TLS_CERT": "/etc/c.pem",
            "BROKER_TLS_KEY": "/etc/k.pem",
            "BROKER_STORAGE_URL": "postgresql://db/broker",
            "BROKER_ALLOWED_ORIGINS": "https://a.example, https://b.example,",
            "BROKER_MAX_QUEUES": "1_000",
        }
    )
    assert settings.port == 9000
    assert settings.flush_interval_ms == 5.5
    assert settings.tls is False
    assert settings.data_dir == Path("/var/lib/broker")
    assert settings.tls_cert == Path("/etc/c.pem")
    assert settings.storage_url == "postgresql://db/broker"
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.max_queues == 1000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("YES", True), ("On", True), ("0", False), ("no", False)],
)
def test_from_env_parses_booleans(raw: str, expected: bool) -> None:
    """Booleans accept 1/true/yes/on and their opposites, in any case."""
    assert Settings.from_env({"BROKER_DEV": raw}).dev is expected


def test_from_env_rejects_an_unknown_boolean() -> None:
    """A boolean that is neither true nor false is an error, not False."""
    with pytest.raises(ValueError, match="BROKER_TLS"):
        Settings.from_env({"BROKER_TLS": "maybe"})


def test_from_env_rejects_a_bad_integer() -> None:
    """A non-integer for an int field names the variable in the error."""
    with pytest.raises(ValueError, match="BROKER_PORT: expected an integer"):
        Settings.from_env({"BROKER_PORT": "http"})


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, the process environment is read."""
    monkeypatch.setenv("BROKER_LOG_LEVEL", "debug")
    assert Settings.from_env().log_level == "DEBUG"


def test_from_env_ignores_unprefixed_variables() -> None:
    """Only BROKER_-prefixed variables count."""
    assert Settings.from_env({"PORT": "1"}).port == 8777


def test_empty_optional_value_means_none() -> None:
    """An empty value for an optional field leaves it unset."""
    assert Settings.from_env({"BROKER_STORAGE_URL": ""}).storage_url is None


def test_overrides_win_over_environment() -> None:
    """Explicit overrides (CLI flags) beat BROKER_* variables."""
    settings = Settings.from_env({"BROKER_PORT": "9000"}, port=9100)
    assert settings.port == 9100


def test_none_overrides_leave_environment_in_place() -> None:
    """An override of None means "flag not given"."""
    settings = Settings.from_env({"BROKER_PORT": "9000"}, port=None)
    assert settings.port == 9000


def test_string_overrides_are_parsed() -> None:
    """A string override for a typed field is converted like an env value."""
    settings = Settings.from_env({}, port="9001", tls="false", cors_origins=["https://x"])
    assert (settings.port, settings.tls, settings.cors_origins) == (9001, False, ("https://x",))


def test_unknown_override_is_rejected() -> None:
    """A misspelt override raises TypeError instead of being ignored."""
    with pytest.raises(TypeError, match="prot"):
        Settings.from_env({}, prot=1)


@pytest.mark.parametrize("depth", [0, 513])
def test_max_json_depth_out_of_range_is_rejected(depth: int) -> None:
    """A JSON depth limit of 0 or past 512 (where the decoders recurse too deep) is refused."""
    with pytest.raises(ValueError, match="max_json_depth"):
        Settings(max_json_depth=depth)


def test_max_json_depth_is_read_from_the_environment() -> None:
    """``BROKER_MAX_JSON_DEPTH`` sets the limit (default 128)."""
    assert Settings().max_json_depth == 128
    assert Settings.from_env({"BROKER_MAX_JSON_DEPTH": "64"}).max_json_depth == 64


@pytest.mark.parametrize("port", [-1, 65536])
def test_port_out_of_range_is_rejected(port: int) -> None:
    """Ports outside 0-65535 raise ValueError."""
    with pytest.raises(ValueError, match="port must be between"):
        Settings(port=port)


def test_non_positive_limit_is_rejected() -> None:
    """Size and count limits must be positive."""
    with pytest.raises(ValueError, match="max_batch must be positive"):
        Settings(max_batch=0)


def test_zero_rate_limit_is_allowed() -> None:
    """A rate limit of 0 (disabled) is valid, a negative one is not."""
    assert Settings(rate_publish_per_s=0).rate_publish_per_s == 0
    with pytest.raises(ValueError, match="rate_publish_per_s must be zero or more"):
        Settings(rate_publish_per_s=-1)


def test_head_limit_below_1_kib_is_rejected() -> None:
    """max_head_bytes under 1 KiB, too small for ordinary request heads, raises ValueError."""
    assert Settings(max_head_bytes=1024).max_head_bytes == 1024
    with pytest.raises(ValueError, match="max_head_bytes must be at least 1024"):
        Settings(max_head_bytes=1023)


@pytest.mark.parametrize(
    "name", ["max_connections_per_address", "graphql_max_tokens", "max_head_bytes"]
)
def test_client_limits_must_be_positive(name: str) -> None:
    """The per-client limits of DESIGN.md "Trust" can't be turned off with 0."""
    zero: dict[str, Any] = {name: 0}
    with pytest.raises(ValueError, match=f"{name} must be"):
        Settings(**zero)


@pytest.mark.parametrize(
    "name",
    [
        "rate_auth_per_min",
        "rate_auth_user_per_min",
        "rate_login_per_min",
        "rate_login_user_per_min",
    ],
)
def test_login_limits_may_be_disabled_with_zero(name: str) -> None:
    """Each login limit is a rate limit: 0 turns it off, a negative value is refused."""
    zero: dict[str, Any] = {name: 0}
    negative: dict[str, Any] = {name: -1}
    assert getattr(Settings(**zero), name) == 0
    with pytest.raises(ValueError, match=f"{name} must be zero or more"):
        Settings(**negative)


@pytest.mark.parametrize("size", [0, 256, 1000, 12288, 131072])
def test_sqlite_page_size_must_be_a_power_of_two_sqlite_takes(size: int) -> None:
    with pytest.raises(ValueError, match="sqlite_page_size must be a power of two"):
        Settings(sqlite_page_size=size)


def test_sqlite_synchronous_is_validated_and_normalised() -> None:
    """Only NORMAL and FULL are accepted, in any case."""
    assert Settings(sqlite_synchronous="full").sqlite_synchronous == "FULL"
    with pytest.raises(ValueError, match="sqlite_synchronous must be one of"):
        Settings(sqlite_synchronous="OFF")


def test_unknown_log_level_is_rejected() -> None:
    """log_level must be a loguru level name."""
    with pytest.raises(ValueError, match="log_level"):
        Settings(log_level="VERBOSE")


def test_tls_cert_requires_key() -> None:
    """A certificate without its key is rejected."""
    with pytest.raises(ValueError, match="together"):
        Settings(tls_cert=Path("c.pem"))


def test_short_jwt_secret_is_rejected() -> None:
    """An HS256 secret under 32 bytes is rejected."""
    with pytest.raises(ValueError, match="32 bytes"):
        Settings(jwt_secret="short")


def test_default_lease_cannot_exceed_max_lease() -> None:
    """default_lease_s above max_lease_s is contradictory."""
    with pytest.raises(ValueError, match="default_lease_s"):
        Settings(default_lease_s=100, max_lease_s=10)


def test_message_must_fit_in_a_body() -> None:
    """max_message_bytes above max_body_bytes is contradictory."""
    with pytest.raises(ValueError, match="max_message_bytes"):
        Settings(max_message_bytes=2048, max_body_bytes=1024)


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after construction."""
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]

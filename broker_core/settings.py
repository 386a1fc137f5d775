"""The broker's settings: one frozen struct, filled from defaults, ``BROKER_*`` and flags.

Every knob of the broker is a field of :class:`Settings` with a default, so
``Settings()`` is a working single-node configuration. :meth:`Settings.from_env`
reads ``BROKER_<FIELD>`` environment variables (``BROKER_PORT=9000``,
``BROKER_TLS=off``, ``BROKER_ALLOWED_ORIGINS=https://a.example,https://b.example``)
and lets explicit overrides (CLI flags) win over them.

Units are in the field names (``_s``, ``_ms``, ``_bytes``, ``_per_s``); sizes
are bytes and durations seconds unless named otherwise.

This is the process's configuration, one flat ``BROKER_*`` namespace, read by
storage and the transports; the core itself reads none of it (`BrokerContext`
hands `Broker` its few numbers). It stays one class although its network,
TLS, CORS, WebSocket and GraphQL sections concern the transports only: some
rules straddle the sections (a message fits in a request body; storage names
a node after its port), and one class keeps ``Settings(**values)`` and the
environment variables simple for every caller.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from .pending import BODY_CACHE_BYTES

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "BROKER_"
"""Prefix of the environment variables read by :meth:`Settings.from_env`."""

_KIB = 1024
_MIB = 1024 * 1024

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

_MAX_JSON_DEPTH = 512
"""Python's decoders recurse once per level and stop near 1,000 frames, their caller's included."""

_LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
_SYNCHRONOUS = ("NORMAL", "FULL")

# Limits where zero is meaningful: "keep nothing", "no window", "flush at
# once", "no cache", "don't long-poll", and for rate limits "unlimited"
# (RabbitMQ and NATS have no request limit at all; see DESIGN.md, Operations).
_NON_NEGATIVE = frozenset(
    {
        "flush_interval_ms",
        "sqlite_settle_linger_ms",
        "postgres_settle_linger_ms",
        "processed_retention_s",
        "processed_retention_count",
        "failed_retention_s",
        "dedup_window_s",
        "body_cache_bytes",
        "max_wait_s",
        "rate_auth_per_min",
        "rate_auth_user_per_min",
        "rate_login_per_min",
        "rate_login_user_per_min",
        "rate_publish_per_s",
        "rate_consume_per_s",
        "rate_admin_per_s",
        "rate_default_per_s",
    }
)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every setting of one broker process; all fields have working defaults.

    Build it with :meth:`from_env` in a server, or directly (``Settings(port=0,
    tls=False)``) in tests. Invalid combinations raise :class:`ValueError` at
    construction, so a running broker never sees them.
    """

    # -- network -------------------------------------------------------------
    host: str = "0.0.0.0"
    """Interface to listen on."""
    port: int = 8777
    """TCP port; 0 lets the OS choose a free one (tests)."""
    tls: bool = True
    """Serve HTTPS/WSS; a self-signed certificate is generated when no cert is given."""
    tls_cert: Path | None = None
    """PEM certificate chain; must be given together with ``tls_key``."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    allowed_origins: tuple[str, ...] = ()
    """Origins allowed to open WebSockets; empty means same-origin when ``Origin`` is sent."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS on REST; empty disables CORS."""
    webhook_allowed_hosts: tuple[str, ...] = ()
    """Host patterns webhooks may post to (``*`` globs); empty refuses every URL."""
    webhook_max_response_bytes: int = 64 * _KIB
    """How much of a webhook's response body is read (the rest is dropped)."""
    request_timeout_s: float = 30.0
    """Upper bound on handling one HTTP request."""
    max_head_bytes: int = 64 * _KIB
    """Largest HTTP request head (request line and headers, WebSocket upgrades too);
    a larger one is answered 431 without reading more of it. At least 1 KiB."""
    max_connections_per_address: int = 1024
    """Most connections one client IP address may hold open at once (WebSockets
    included); one more is answered 429 with ``Retry-After`` and closed. Room for
    one user's ``max_connections_per_user`` WebSockets and some HTTP beside them
    (the soak's 1,000 consumers run from one address); with heads capped at
    ``max_head_bytes``, about 128 MiB of buffers at worst."""

    # -- files and logs ------------------------------------------------------
    data_dir: Path = Path("broker-data")
    """Holds the SQLite database, secrets, TLS material and logs."""
    log_level: str = "INFO"
    """Minimum level of the console and file logs (loguru level names)."""
    log_retention_hours: int = 72
    """Hourly JSON log files older than this are deleted."""
    dev: bool = False
    """Development mode: exception traces in logs, GraphiQL."""
    otel: bool = False
    """Export OpenTelemetry spans of traced messages over OTLP (needs the ``otel`` extra;
    ``OTEL_EXPORTER_OTLP_*`` configure the exporter): ``transports.observability.tracing``."""

    # -- auth ----------------------------------------------------------------
    jwt_secret: str | None = None
    """HS256 signing secret; generated and kept in the data dir when unset."""
    access_token_ttl_s: int = 900
    """Lifetime of an access token."""
    refresh_token_ttl_s: int = 30 * 24 * 3600
    """Lifetime of a refresh token."""
    admin_username: str = "admin"
    """Name of the first admin, created on first start."""
    admin_password: str | None = None
    """Password of the first admin; generated, printed once and kept hashed when unset."""

    # -- storage -------------------------------------------------------------
    storage_url: str | None = None
    """``postgresql://...`` for the scale-out backend; None is SQLite at :attr:`sqlite_path`."""
    sqlite_synchronous: str = "NORMAL"
    """SQLite ``PRAGMA synchronous`` in WAL mode: ``NORMAL`` or ``FULL``.

    ``NORMAL`` (the default) fsyncs the body segments, the WAL and the
    database at checkpoints (`storage.sqlite.checkpointer`): a confirmed
    publish survives a ``kill -9`` of the broker; a power loss may lose the
    commits since the last checkpoint (NATS JetStream syncs on a timer
    too). ``FULL`` fsyncs each group commit's body segment and WAL before
    its publishes are confirmed (a confirmed message survives a power
    loss), at a cost measured over 3 interleaved runs: end to end -6%,
    publish only -10%, confirm p99 x2, and 11.5 KiB written per message at
    1,000 msg/s against 5.1 (README, Disk writes).
    """
    sqlite_page_size: int = 1024
    """Bytes per page of a new SQLite database (a power of two, 512 to 65536).

    Message bodies live in segment files beside the database
    (``storage.sqlite.segments``), so its rows are small state. A commit
    writes each page it touches whole to the WAL: at a low rate, where
    nearly every message commits on its own, small pages write least (at
    1,000 msg/s about 3 KiB per message with 1 KiB pages, 16 with 4 KiB,
    40-64 with 16 KiB; ``python -m benchmarks.disk_writes``, the README's
    disk writes section). A database keeps the page size it was made with.
    """
    sqlite_settle_linger_ms: float = 50.0
    """How long acks, nacks and deliveries may wait to commit with the next publish (SQLite).

    Nobody waits for their commit (an ack is answered once the queue's
    state changed); one lost in a crash redelivers its message, marked
    redelivered. At low rates they ride publish commits instead of costing
    commits of their own (README, Disk writes). 0 commits them at once.
    """
    postgres_settle_linger_ms: float = 50.0
    """How long acks (of messages of no group) and history lines may wait to commit with the
    next publish (PostgreSQL).

    Nobody waits for their commit and no other node needs them at once; one
    lost in a crash redelivers its message, marked redelivered. At a steady
    rate they ride publish commits, or share one commit per wait on a node
    that only consumes, instead of costing a transaction each. 0 commits
    them at once.
    """
    accept_data_loss: bool = False
    """Start on a SQLite database that lost writes it had committed (a truncated or
    zeroed WAL, a power loss with ``NORMAL``), logging what is missing, instead of
    refusing to start. Meant for one start (``broker serve --accept-data-loss``)."""
    node_name: str | None = None
    """This node's name among the nodes sharing a PostgreSQL database; default ``host:port``."""
    node_timeout_s: float = 10.0
    """A node sharing the database whose heartbeat stops this long is presumed dead (its
    leases go to the other nodes)."""
    cluster_poll_s: float = 1.0
    """How often a node sharing the database looks for work a lost notification would have
    told (delayed messages, a listener reconnecting)."""
    flush_interval_ms: float = 0.0
    """How long a small write-behind batch waits for company before it commits.

    0 (the default) commits as soon as the previous commit ends: batches still
    grow under load (they fill while a commit runs) and an idle broker adds
    no latency. Measured with wrk on 2 cores: 0 ms gave 3,095 publishes/s,
    2 ms gave 2,205.
    """
    flush_max_ops: int = 512
    """A lingering batch commits at once when it holds this many operations."""
    body_cache_bytes: int = BODY_CACHE_BYTES
    """Bodies of pending messages kept in memory per broker; the rest is read back lazily.

    A backlog whose bodies fit drains from memory; one read back from
    storage costs the broker about twice the CPU per message. Draining
    50,000 pending 1 KiB messages (3 interleaved runs, one broker per size,
    2026-12-06) went at 40.9k msg/s with 48 MiB, 48.0k with 64, 23.0k with
    16; 200,000 go at the same speed whatever the size (past the cache every
    body is read back). 48 MiB keeps 1,000,000 pending under 256 MB of RSS
    in 100,000 groups too (238.5 MB; 258.2 with 64 MiB) and at 219.1 MB
    without groups (`benchmarks.memory`, `benchmarks.groups --memory`).
    """

    # -- sizes and counts ----------------------------------------------------
    max_body_bytes: int = 1 * _MIB
    """Largest HTTP request body."""
    max_message_bytes: int = 256 * _KIB
    """Largest message content."""
    max_headers: int = 64
    """Most headers on one message."""
    max_batch: int = 1000
    """Most messages in one batch publish, consume or settle."""
    max_queues: int = 10_000
    """Most queues in one broker."""
    max_consumers_per_connection: int = 256
    """Most subscriptions on one WebSocket or GraphQL connection."""
    max_connections_per_user: int = 1000
    """Most concurrent WebSocket connections of one user."""
    max_json_depth: int = 128
    """Deepest nesting of arrays and objects in a JSON body, frame or GraphQL variable (at most
    512: the decoders recurse per level); deeper is refused with 400 ``too_deep``."""

    # -- WebSocket -----------------------------------------------------------
    ws_max_frame_bytes: int = 1 * _MIB
    """Largest incoming WebSocket message."""
    ws_send_buffer_messages: int = 1000
    """Outgoing frames buffered per connection before it counts as a slow consumer."""
    ws_auth_timeout_s: float = 5.0
    """Time a connection has to authenticate with its first frame."""
    ws_heartbeat_s: float = 20.0
    """Interval between server pings."""
    ws_heartbeat_timeout_s: float = 20.0
    """A connection whose pong is this late is closed."""

    # -- delivery ------------------------------------------------------------
    default_lease_s: float = 30.0
    """Lease of a delivery when neither the consumer nor the queue sets one."""
    max_lease_s: float = 43_200.0
    """Longest lease a consumer may ask for (12 hours, as SQS's visibility timeout)."""
    max_wait_s: float = 20.0
    """Longest long-poll ``wait`` of a REST consume (as SQS's)."""
    processed_retention_s: float = 3600.0
    """Processed messages are kept this long for browsing."""
    processed_retention_count: int = 10_000
    """At most this many processed messages are kept per queue."""
    failed_retention_s: float = 7 * 24 * 3600.0
    """Failed messages (no dead-letter queue) are kept this long for retry; 0 keeps them."""
    dedup_window_s: float = 300.0
    """A repeated ``dedup_id`` within this window returns the first message."""
    history: bool = True
    """Record every message's history (``GET /messages/{id}/history``)."""
    max_result_bytes: int = 64 * _KIB
    """Largest result (JSON) an ack may carry."""

    # -- rate limits (token buckets; 0 disables a limit) -----------------------
    rate_auth_per_min: float = 30.0
    """Failed logins allowed per client IP address per minute."""
    rate_auth_user_per_min: float = 5.0
    """Failed logins allowed per username per minute (below the address's, so that
    guessing one account's password locks that account before its address)."""
    rate_login_per_min: float = 60.0
    """Login attempts, successful ones included, per client IP address per minute
    (each costs a password hash: tens of milliseconds of CPU)."""
    rate_login_user_per_min: float = 20.0
    """Login attempts, successful ones included, per username per minute."""
    rate_publish_per_s: float = 20_000.0
    """Publish requests per second per client (burst of the same size)."""
    rate_consume_per_s: float = 20_000.0
    """Consume and settle requests per second per client."""
    rate_admin_per_s: float = 200.0
    """Queue and user management requests per second per client."""
    rate_default_per_s: float = 1000.0
    """Every other request, per second per client."""

    # -- GraphQL -------------------------------------------------------------
    graphql_max_depth: int = 10
    """Deepest selection set a GraphQL operation may have."""
    graphql_max_complexity: int = 1000
    """Largest complexity (fields counted with list multipliers) of one operation."""
    graphql_max_tokens: int = 2000
    """Most lexical tokens in a GraphQL document; a longer one is refused while it is
    read, before it is validated (a 1000-message ``publishBatch`` takes its messages
    as a variable, which costs no tokens)."""
    graphql_introspection: bool = True
    """Answer introspection queries (the dashboard and GraphiQL need them)."""

    def __post_init__(self) -> None:
        """Normalise case-insensitive fields and reject invalid values.

        Raises:
            ValueError: A field is out of range or two fields contradict each other.
        """
        # Level and PRAGMA names are case-insensitive for people; store them in
        # the case loguru and SQLite document.
        msgspec.structs.force_setattr(self, "log_level", self.log_level.upper())
        msgspec.structs.force_setattr(self, "sqlite_synchronous", self.sqlite_synchronous.upper())
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.log_level not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.sqlite_synchronous not in _SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        size = self.sqlite_page_size
        if not 512 <= size <= 65536 or size & (size - 1):
            raise ValueError(
                f"sqlite_page_size must be a power of two from 512 to 65536, got {size}"
            )
        for field in msgspec.structs.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if field.name in _NON_NEGATIVE:
                if value < 0:
                    raise ValueError(f"{field.name} must be zero or more, got {value}")
            elif field.name != "port" and value <= 0:
                raise ValueError(f"{field.name} must be positive, got {value}")
        if self.max_head_bytes < _KIB:
            raise ValueError(f"max_head_bytes must be at least {_KIB}, got {self.max_head_bytes}")
        if self.max_json_depth > _MAX_JSON_DEPTH:
            raise ValueError(
                f"max_json_depth must be at most {_MAX_JSON_DEPTH}, got {self.max_json_depth}"
            )
        if self.default_lease_s > self.max_lease_s:
            raise ValueError(
                f"default_lease_s ({self.default_lease_s}) exceeds max_lease_s ({self.max_lease_s})"
            )
        if self.max_message_bytes > self.max_body_bytes:
            raise ValueError(
                f"max_message_bytes ({self.max_message_bytes}) exceeds "
                f"max_body_bytes ({self.max_body_bytes}): no request could carry such a message"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < 32:
            # RFC 7518 section 3.2: an HS256 key must be at least 256 bits.
            raise ValueError("jwt_secret must be at least 32 bytes long")

    @property
    def sqlite_path(self) -> Path:
        """The SQLite database file used when ``storage_url`` is None."""
        return self.data_dir / "broker.db"

    @property
    def logs_dir(self) -> Path:
        """The directory of the hourly JSON log files."""
        return self.data_dir / "logs"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``BROKER_*`` variables, then apply explicit overrides.

        Call it once at startup; pass CLI flags as ``overrides`` (None means "flag
        not given", so the environment or the default applies). A string override
        for a non-string field is parsed like an environment value.

        Args:
            environ: The environment to read; ``os.environ`` when None.
            **overrides: Field values that win over the environment.

        Returns:
            The validated settings.

        Raises:
            ValueError: A value does not parse or is out of range.
            TypeError: An override names no field.
        """
        env = os.environ if environ is None else environ
        hints = {field.name: field.type for field in msgspec.structs.fields(cls)}
        unknown = sorted(set(overrides) - set(hints))
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, hint in hints.items():
            var = ENV_PREFIX + name.upper()
            if var in env:
                values[name] = _parse(var, env[var], hint)
        for name, value in overrides.items():
            if value is None:
                continue
            if isinstance(value, str):
                values[name] = _parse(f"--{name.replace('_', '-')}", value, hints[name])
            elif isinstance(value, list):
                values[name] = tuple(value)
            else:
                values[name] = value
        return cls(**values)


def _parse(source: str, raw: str, hint: Any) -> Any:
    """Convert one textual value to the field's type; ``source`` names it in errors."""
    text = raw.strip()
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        # Only ``X | None`` is used: an empty value means None.
        if text == "":
            return None
        (hint,) = (arg for arg in args if arg is not type(None))
        args = typing.get_args(hint)
    if hint is bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(
            f"{source}: expected a boolean (1/0, true/false, yes/no, on/off), got {raw!r}"
        )
    if hint is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ValueError(f"{source}: expected an integer, got {raw!r}") from None
    if hint is float:
        try:
            return float(text.replace("_", ""))
        except ValueError:
            raise ValueError(f"{source}: expected a number, got {raw!r}") from None
    if hint is Path:
        return Path(text).expanduser()
    if typing.get_origin(hint) is tuple and args[1:] == (Ellipsis,):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    # Surrounding whitespace in an environment value is always an accident
    # (a trailing newline from ``$(cat file)``), never part of a name or secret.
    return text

"""Webhooks: what one is (stored and shown), how its requests are signed, which hosts it may reach.

A webhook pushes the messages of one queue to an HTTP endpoint (DESIGN.md,
"Webhook push"). This module is pure: the stored record and the wire shapes,
the Standard Webhooks signature (``v1,`` + base64 HMAC-SHA256 of
``{id}.{timestamp}.{body}``, keyed by the bytes of a ``whsec_`` secret) and
the host rules of ``BROKER_WEBHOOK_ALLOWED_HOSTS``. The delivery itself (HTTP,
leases, settling) is `transports.webhooks`'.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import secrets
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from .patterns import glob_match

__all__ = [
    "SECRET_PREFIX",
    "CreateWebhookRequest",
    "UpdateWebhookRequest",
    "WebhookRecord",
    "WebhookState",
    "WebhookView",
    "address_allowed",
    "generate_secret",
    "host_allowed",
    "secret_key",
    "sign",
    "target_host",
]

SECRET_PREFIX = "whsec_"
"""The Standard Webhooks prefix of a symmetric secret (then the key in base64)."""
_MIN_KEY, _MAX_KEY = 24, 64
"""Key sizes in bytes the Standard Webhooks spec asks for."""
_MAX_HEADERS = 32

Url = Annotated[str, msgspec.Meta(min_length=8, max_length=2048)]
HeaderMap = Annotated[dict[str, Annotated[str, msgspec.Meta(max_length=1024)]], msgspec.Meta()]


class WebhookState(enum.StrEnum):
    """Whether a webhook delivers: ``active``, ``paused`` by a user, ``disabled`` by a 410."""

    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"


class CreateWebhookRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``POST /queues/{name}/webhooks``: where to push, how hard, with what secret."""

    url: Url
    secret: str | None = None
    """A ``whsec_`` secret (24 to 64 bytes of key); generated when omitted."""
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    timeout_ms: Annotated[int, msgspec.Meta(ge=100, le=120_000)] = 10_000
    headers: HeaderMap | None = None
    """Extra request headers (not the ``webhook-*`` ones, nor hop-by-hop ones)."""


class UpdateWebhookRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``PATCH /queues/{name}/webhooks/{id}``: pause (true) or resume (false).

    Resuming also re-enables a webhook a 410 disabled.
    """

    paused: bool


class WebhookRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A webhook as storage keeps it (the secret included: it signs, so it can't be a hash)."""

    id: str
    queue: str
    url: str
    secret: str
    concurrency: int = 1
    timeout_ms: int = 10_000
    headers: dict[str, str] | None = None
    paused: bool = False
    disabled: str | None = None
    """Why the endpoint turned it off (a 410), or ``None``."""
    created_at: float = 0.0
    created_by: str = ""

    @property
    def state(self) -> WebhookState:
        """``disabled`` wins over ``paused``: resuming clears both."""
        if self.disabled is not None:
            return WebhookState.DISABLED
        return WebhookState.PAUSED if self.paused else WebhookState.ACTIVE


class Attempt(msgspec.Struct, kw_only=True, frozen=True):
    """One delivery attempt, as the webhook's recent history shows it."""

    at: float
    message_id: int
    attempt: int
    status: int | None
    """The HTTP status, or ``None`` when no answer came (timeout, refused)."""
    outcome: str
    """``acked``, ``nacked`` or ``disabled``."""
    latency_ms: float
    error: str | None = None


class WebhookView(msgspec.Struct, kw_only=True, frozen=True):
    """A webhook as users see it: never its secret, except once in the answer that created it."""

    id: str
    queue: str
    url: str
    concurrency: int
    timeout_ms: int
    headers: dict[str, str] | None
    state: WebhookState
    created_at: float
    secret: str | None = None
    in_flight: int = 0
    deliveries: int = 0
    failures: int = 0
    last_error: str | None = None
    recent: list[Attempt] = msgspec.field(default_factory=list)


def generate_secret() -> str:
    """A new ``whsec_`` secret: 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret.

    Raises:
        ValueError: not ``whsec_`` + base64 of 24 to 64 bytes.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("secret must be whsec_ followed by base64") from None
    if not _MIN_KEY <= len(key) <= _MAX_KEY:
        raise ValueError(f"secret's key must be {_MIN_KEY} to {_MAX_KEY} bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one request: ``v1,`` + base64 HMAC-SHA256."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


_FORBIDDEN_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
    }
)


def check_headers(headers: dict[str, str] | None) -> None:
    """Refuse extra headers that would override what the broker sets.

    Raises:
        ValueError: too many, or one the broker owns.
    """
    if headers is None:
        return
    if len(headers) > _MAX_HEADERS:
        raise ValueError(f"at most {_MAX_HEADERS} headers")
    for name, value in headers.items():
        if not name or not all(33 <= ord(c) < 127 and c != ":" for c in name):
            raise ValueError(f"header name {name!r} is not a token")
        if name.lower() in _FORBIDDEN_HEADERS:
            raise ValueError(f"header {name!r} is set by the broker")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} has a control character")


def target_host(url: str) -> str:
    """The host of an ``http``/``https`` URL (lowercase, IPv6 without brackets).

    Raises:
        ValueError: another scheme, no host, or credentials in the URL.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        raise ValueError(f"url is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("url must be http or https")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not carry credentials (use headers)")
    if not parts.hostname:
        raise ValueError("url has no host")
    return parts.hostname.lower()


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` (a name or an address) matches one of the allowed host patterns."""
    return any(glob_match(pattern.lower(), host) for pattern in patterns)


def address_allowed(address: str, host: str, patterns: tuple[str, ...]) -> bool:
    """Whether a resolved ``address`` of ``host`` may be connected to.

    A public address is fine once the name was allowed; a private, loopback,
    link-local or otherwise non-global one only when the address itself is
    allowed (``127.0.0.1``, ``10.*``), so an allowed name cannot point inside.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global and not ip.is_multicast:
        return True
    return host_allowed(str(ip), patterns)

"""Service tokens: long-lived, scoped bearer credentials for machines (Prometheus, workers).

An admin creates one with a name, scopes and an optional expiry; the secret
is shown once and only its SHA-256 is kept. A plain, fast hash is right here,
unlike for passwords: the secret is 32 random bytes (256 bits), so nobody can
guess it from the stored hash whatever the hash's speed, while a slow
password hash (scrypt) would cost ~50 ms of CPU on every request the token
authorises. The comparison is constant-time (`hmac.compare_digest`).

A token reads ``wsb_<id>_<secret>``: the id finds the record in one dict
look-up, so checking a token costs one SHA-256 of ~60 bytes. It speaks for a
*principal*, a `User` named ``token:<id>`` (a name no person can have) whose
permissions are the token's queue scopes and whose `User.scopes` are all its
scopes, so every permission check of every transport applies unchanged, and
revoking the token ends its WebSocket and GraphQL sessions the way deleting
a user does (``transports.accounts``).

Scopes:

* ``metrics:read``: ``GET /metrics`` (every queue's series);
* ``stats:read``: ``GET /stats``;
* ``publish:<pattern>``, ``consume:<pattern>``, ``manage:<pattern>``: the
  queue actions of `broker_core.auth.Action` on the queues the pattern
  matches, as a user's permission grants them.

A principal is never an admin: users, tokens and logs stay with people.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from .auth import Action, Claims, Permission, TokenType, User
from .errors import NotPermitted

__all__ = [
    "METRICS_READ",
    "PRINCIPAL_PREFIX",
    "STATS_READ",
    "TOKEN_PREFIX",
    "CreateServiceTokenRequest",
    "CreatedServiceToken",
    "ServiceToken",
    "ServiceTokenView",
    "hash_secret",
    "invalid_expiry",
    "issue",
    "matches",
    "parse_token",
    "principal",
    "principal_claims",
    "require_scope",
    "token_id_of",
]

METRICS_READ = "metrics:read"
STATS_READ = "stats:read"
TOKEN_PREFIX = "wsb_"
"""Every service token starts with it (secret scanners can look for it)."""
PRINCIPAL_PREFIX = "token:"
"""The principal of token ``id`` is named ``token:<id>``; usernames can't hold a colon."""

_ACTIONS = "|".join(action.value for action in Action)
Scope = Annotated[
    str,
    msgspec.Meta(
        pattern=rf"^(metrics:read|stats:read|({_ACTIONS}):[^\s:]{{1,200}})$",
        description="metrics:read, stats:read, or <publish|consume|manage>:<queue pattern>",
    ),
]
_NO_EXPIRY_S = 100 * 365 * 86400
"""The ``exp`` of a token without expiry: a century (a WebSocket arms a timer on it)."""


class ServiceToken(msgspec.Struct, frozen=True, kw_only=True):
    """A service token as stored: never send it to clients (it holds the hash)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    secret_hash: str
    """Hex SHA-256 of the whole token string."""
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None


class CreateServiceTokenRequest(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Body of ``POST /tokens``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=64)]
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    """An instant (ISO 8601, with a time zone); none: the token lives until revoked."""


class ServiceTokenView(msgspec.Struct, frozen=True, kw_only=True):
    """A service token as ``GET /tokens`` shows it (never the secret nor its hash)."""

    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None

    @classmethod
    def of(cls, token: ServiceToken) -> ServiceTokenView:
        """The public view of ``token``."""
        return cls(
            id=token.id,
            name=token.name,
            scopes=list(token.scopes),
            created_at=token.created_at,
            created_by=token.created_by,
            expires_at=token.expires_at,
        )


class CreatedServiceToken(ServiceTokenView, frozen=True, kw_only=True):
    """The answer of ``POST /tokens``: the view and, this once, the token itself."""

    token: str

    @classmethod
    def of_new(cls, record: ServiceToken, token: str) -> CreatedServiceToken:
        """The answer for a token just made."""
        view = ServiceTokenView.of(record)
        return cls(**msgspec.structs.asdict(view), token=token)


def invalid_expiry(request: CreateServiceTokenRequest, now: datetime | None = None) -> str | None:
    """Why ``request``'s ``expires_at`` can't be taken (it has passed), or ``None``."""
    expires = request.expires_at
    if expires is not None and expires <= (now or datetime.now(UTC)):
        return "expires_at: must be in the future"
    return None


def hash_secret(token: str) -> str:
    """The stored hash of a token string (hex SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    request: CreateServiceTokenRequest, created_by: str, now: datetime | None = None
) -> tuple[ServiceToken, str]:
    """Make a new service token: the record to store and the token to show once."""
    id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}{id}_{secrets.token_urlsafe(32)}"
    record = ServiceToken(
        id=id,
        name=request.name,
        # Duplicates are harmless but noisy in listings.
        scopes=tuple(dict.fromkeys(request.scopes)),
        secret_hash=hash_secret(token),
        created_at=now or datetime.now(UTC),
        created_by=created_by,
        expires_at=request.expires_at,
    )
    return record, token


def parse_token(token: str) -> str | None:
    """The id of a string shaped like a service token, or ``None`` (then it is no such token)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    return id if sep and id and secret else None


def matches(record: ServiceToken, token: str) -> bool:
    """Whether ``token`` is the one ``record`` was issued as (constant-time)."""
    return hmac.compare_digest(hash_secret(token), record.secret_hash)


def token_id_of(principal_name: str) -> str | None:
    """The token id of a principal's name, or ``None`` for a person's."""
    if principal_name.startswith(PRINCIPAL_PREFIX):
        return principal_name[len(PRINCIPAL_PREFIX) :]
    return None


def principal(record: ServiceToken) -> User:
    """The `User` a token speaks for: its queue scopes as permissions, never an admin."""
    by_pattern: dict[str, list[Action]] = {}
    for scope in record.scopes:
        action, _, pattern = scope.partition(":")
        if action in Action.__members__.values():
            by_pattern.setdefault(pattern, []).append(Action(action))
    return User(
        username=PRINCIPAL_PREFIX + record.id,
        password_hash="",
        created_at=record.created_at,
        permissions=tuple(
            Permission(pattern=pattern, actions=tuple(actions))
            for pattern, actions in by_pattern.items()
        ),
        scopes=record.scopes,
    )


def principal_claims(record: ServiceToken, issuer: str = "wsbroker") -> Claims:
    """Claims standing for a token's, so sessions follow and expire it as they do a JWT."""
    created = record.created_at.timestamp()
    expires = record.expires_at
    return Claims(
        sub=PRINCIPAL_PREFIX + record.id,
        iss=issuer,
        exp=int(expires.timestamp()) if expires is not None else int(created) + _NO_EXPIRY_S,
        iat=created,
        jti=record.id,
        type=TokenType.ACCESS,
    )


def require_scope(user: User, scope: str) -> None:
    """Raise `NotPermitted` when ``user`` is a service token's principal without ``scope``.

    People (``scopes is None``) pass: what they may reach is decided as before.
    """
    if user.scopes is not None and scope not in user.scopes:
        raise NotPermitted(f"use this token here (it needs the {scope!r} scope)")

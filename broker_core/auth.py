"""Users, their permissions and their tokens: who a request speaks for and what it may do.

Pure logic, no HTTP and no storage: transports call :class:`TokenService`
and keep users and refresh records in storage. Password hashes are
`broker_core.passwords`; the glob matching of permission patterns is
`broker_core.patterns`.

* Tokens are HS256 JWTs (RFC 7519). An access token authorises requests; a
  refresh token buys a new pair once. Refresh tokens belong to a *family*
  (one login); reusing a revoked refresh token revokes the family (the
  refresh token rotation of the OAuth 2.0 Security BCP, section 4.14).
* Permissions grant :class:`Action` s on queue-name patterns; admins may do
  everything.
"""

from __future__ import annotations

import enum
import math
import secrets
import time
from datetime import datetime
from typing import Any

import jwt
import msgspec

from .patterns import glob_match

__all__ = [
    "Action",
    "Claims",
    "InvalidToken",
    "IssuedTokens",
    "Permission",
    "RefreshRecord",
    "TokenPair",
    "TokenService",
    "TokenType",
    "User",
    "allowed",
    "revocation_reason",
    "token_is_current",
]

# -- users and permissions ------------------------------------------------------


class Action(enum.StrEnum):
    """What a permission allows on a queue."""

    PUBLISH = "publish"
    CONSUME = "consume"
    MANAGE = "manage"
    """Create, update, purge and delete queues, and browse their messages."""


class Permission(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Actions granted on the queues whose names match a pattern.

    ``pattern`` is glob-like over the whole name: ``*`` matches any run of
    characters, ``?`` exactly one; ``orders.*`` matches ``orders.eu`` but not
    ``orders``. Unknown fields are refused: a typo in a request (``action``)
    must not grant less than it says, and stored documents hold only these.
    """

    pattern: str
    actions: tuple[Action, ...]

    def matches(self, queue: str) -> bool:
        """Tell whether ``queue`` is covered by the pattern."""
        return glob_match(self.pattern, queue)

    def grants(self, action: Action, queue: str) -> bool:
        """Tell whether this permission allows ``action`` on ``queue``."""
        return action in self.actions and self.matches(queue)


class User(msgspec.Struct, frozen=True, kw_only=True):
    """A broker account, as stored. Never send it to clients: it holds the hash."""

    username: str
    password_hash: str
    created_at: datetime
    admin: bool = False
    permissions: tuple[Permission, ...] = ()
    tokens_valid_after: float = 0.0
    """Unix time; tokens issued before it are rejected (set at creation and on password change,
    so that neither an old password's tokens nor a deleted namesake's speak for the user)."""
    disabled: bool = False
    scopes: tuple[str, ...] | None = None
    """``None`` for a person; the scopes of a service token's principal
    (`broker_core.service_tokens`), which may do only what they name."""


def allowed(user: User, action: Action, queue: str) -> bool:
    """Tell whether ``user`` may perform ``action`` on ``queue``.

    Admins may do everything; a disabled user nothing. Actions do not imply
    each other: ``manage`` does not grant ``publish``.
    """
    if user.disabled:
        return False
    if user.admin:
        return True
    return any(permission.grants(action, queue) for permission in user.permissions)


# -- tokens ---------------------------------------------------------------------


class InvalidToken(Exception):
    """A token was rejected; ``reason`` says why in one sentence, never quoting the token.

    ``code`` is the machine code clients get: ``unauthorized``, or
    ``token_revoked`` when the token was valid but its user changed since
    (deleted, disabled, password changed): logging in again is the only cure.
    """

    def __init__(self, reason: str, code: str = "unauthorized") -> None:
        self.reason = reason
        self.code = code
        super().__init__(reason)


class TokenType(enum.StrEnum):
    """The ``type`` claim that keeps access and refresh tokens apart."""

    ACCESS = "access"
    REFRESH = "refresh"


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """The verified claims of a token."""

    sub: str
    """The username."""
    iss: str
    exp: int
    iat: float
    """Issue time, with millisecond precision so it compares exactly with
    :attr:`User.tokens_valid_after` (RFC 7519 section 2 allows a non-integer
    NumericDate)."""
    jti: str
    type: TokenType
    fam: str | None = None
    """The refresh family; set on refresh tokens only."""
    nbf: float | None = None


class TokenPair(msgspec.Struct, frozen=True, kw_only=True):
    """The body answered by ``POST /auth/token`` and ``POST /auth/refresh``."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int
    """Seconds until the access token expires."""


class RefreshRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What storage keeps about an issued refresh token, to rotate and revoke it."""

    jti: str
    family: str
    username: str
    expires_at: float
    """Unix time."""
    revoked: bool = False


class IssuedTokens(msgspec.Struct, frozen=True, kw_only=True):
    """A freshly issued pair for the client and the refresh record for storage."""

    pair: TokenPair
    refresh: RefreshRecord


_ALGORITHM = "HS256"
_LEEWAY_S = 5.0
# A real token is a few hundred bytes; refuse to parse megabytes of input.
_MAX_TOKEN_CHARS = 4096
_REQUIRED = ["sub", "iss", "exp", "iat", "jti", "type"]


def revocation_reason(user: User | None, claims: Claims) -> str | None:
    """Why a verified token no longer speaks for ``user`` (its ``sub`` as it is now), or ``None``.

    ``"user deleted"`` when there is no such user (or it is another one),
    ``"user disabled"``, and ``"password changed"`` when the token was issued
    before the user's ``tokens_valid_after`` (a new password, or a user
    created again under a deleted user's name).
    """
    if user is None or claims.sub != user.username:
        return "token revoked" if claims.sub.startswith("token:") else "user deleted"
    if user.disabled:
        return "user disabled"
    if claims.iat < user.tokens_valid_after:
        return "password changed"
    return None


def token_is_current(user: User, claims: Claims) -> bool:
    """Tell whether a verified token still speaks for ``user`` (see `revocation_reason`)."""
    return revocation_reason(user, claims) is None


class TokenService:
    """Issues and verifies the broker's HS256 access and refresh tokens.

    Build one at startup from the configured secret and share it; it holds no
    mutable state. Revocation lives in storage: the transport checks the
    refresh record of a refresh token's ``jti`` and :func:`token_is_current`.

    Args:
        secret: The HMAC key, at least 32 bytes (RFC 7518 section 3.2).
        access_ttl_s: Lifetime of access tokens.
        refresh_ttl_s: Lifetime of refresh tokens.
        issuer: The ``iss`` claim written and required.

    Raises:
        ValueError: The secret is too short or a lifetime is not positive.
    """

    def __init__(
        self,
        secret: str,
        access_ttl_s: int,
        refresh_ttl_s: int,
        issuer: str = "wsbroker",
    ) -> None:
        if len(secret.encode()) < 32:
            raise ValueError("the token secret must be at least 32 bytes long")
        if access_ttl_s <= 0 or refresh_ttl_s <= 0:
            raise ValueError("token lifetimes must be positive")
        self._key = secret.encode()
        self._access_ttl_s = int(access_ttl_s)
        self._refresh_ttl_s = int(refresh_ttl_s)
        self._issuer = issuer

    def _encode(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def issue_pair(
        self,
        username: str,
        family: str | None = None,
        *,
        now: float | None = None,
    ) -> IssuedTokens:
        """Issue an access token and a refresh token for ``username``.

        Call it after a successful login (``family=None`` starts a new family)
        or after a refresh (pass the old token's family). Store
        ``result.refresh`` before answering ``result.pair``.

        Args:
            username: The ``sub`` of both tokens.
            family: The refresh family to continue; None starts a new one.
            now: Unix time of issue; the wall clock when None.

        Returns:
            The pair for the client and the refresh record for storage.
        """
        # Rounded up to the millisecond so that iat >= the moment of issue,
        # which token_is_current compares with tokens_valid_after.
        issued = math.ceil((time.time() if now is None else now) * 1000) / 1000
        family = family or secrets.token_urlsafe(16)
        access_exp = int(issued) + self._access_ttl_s
        refresh_exp = int(issued) + self._refresh_ttl_s
        refresh_jti = secrets.token_urlsafe(16)
        common = {"sub": username, "iss": self._issuer, "iat": issued}
        access = self._encode(
            {
                **common,
                "exp": access_exp,
                "jti": secrets.token_urlsafe(16),
                "type": TokenType.ACCESS.value,
            }
        )
        refresh = self._encode(
            {
                **common,
                "exp": refresh_exp,
                "jti": refresh_jti,
                "type": TokenType.REFRESH.value,
                "fam": family,
            }
        )
        return IssuedTokens(
            pair=TokenPair(
                access_token=access,
                refresh_token=refresh,
                expires_in=self._access_ttl_s,
            ),
            refresh=RefreshRecord(
                jti=refresh_jti,
                family=family,
                username=username,
                expires_at=float(refresh_exp),
            ),
        )

    def verify(self, token: str, expected_type: TokenType) -> Claims:
        """Verify a token's signature, lifetime, issuer and type.

        Only HS256 is accepted, whatever the token's header says (RFC 8725
        section 2.1), which rules out ``alg: none`` and RS/HS confusion.
        Clocks may disagree by 5 seconds.

        Args:
            token: The compact JWT, without ``Bearer``.
            expected_type: ``ACCESS`` for requests, ``REFRESH`` for refresh and logout.

        Returns:
            The verified claims.

        Raises:
            InvalidToken: The token must not be honoured; map it to 401.
        """
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken("token is empty or too long")
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                issuer=self._issuer,
                leeway=_LEEWAY_S,
                options={"require": _REQUIRED, "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token is not valid yet") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature is invalid") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken("token algorithm is not allowed") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token issuer is not accepted") from None
        except jwt.PyJWTError:
            raise InvalidToken("token is malformed") from None
        try:
            claims = msgspec.convert(payload, Claims)
        except msgspec.ValidationError:
            raise InvalidToken("token claims are malformed") from None
        if claims.type is not expected_type:
            raise InvalidToken(
                f"{claims.type.value} token given where {expected_type.value} token is expected"
            )
        if claims.type is TokenType.REFRESH and not claims.fam:
            raise InvalidToken("refresh token lacks its family")
        return claims

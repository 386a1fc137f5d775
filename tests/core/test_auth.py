"""Tests of the auth rules: password hashes, permissions and JWT issue/verify."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from broker_core.auth import (
    Action,
    Claims,
    InvalidToken,
    Permission,
    TokenService,
    TokenType,
    User,
    allowed,
    revocation_reason,
    token_is_current,
)
from broker_core.passwords import DUMMY_HASH, hash_password, needs_rehash, verify_password

SECRET = "s" * 40
ISSUER = "wsbroker"


@pytest.fixture(scope="module")
def stored_hash() -> str:
    """One hash of "correct horse", computed once (scrypt is slow on purpose)."""
    return hash_password("correct horse")


@pytest.fixture
def service() -> TokenService:
    """A token service with a 15-minute access and 1-day refresh lifetime."""
    return TokenService(SECRET, access_ttl_s=900, refresh_ttl_s=86_400)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
        "type": "access",
    }
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def _user(**changes: Any) -> User:
    fields: dict[str, Any] = {
        "username": "alice",
        "password_hash": DUMMY_HASH,
        "created_at": datetime(2024, 1, 1, tzinfo=UTC),
    }
    fields.update(changes)
    return User(**fields)


# -- passwords -----------------------------------------------------------------


def test_hash_has_documented_encoding(stored_hash: str) -> None:
    """A hash reads scrypt$16384$8$1$salt$hash."""
    assert stored_hash.startswith("scrypt$16384$8$1$")
    assert len(stored_hash.split("$")) == 6


def test_right_password_verifies(stored_hash: str) -> None:
    """The hashed password verifies."""
    assert verify_password("correct horse", stored_hash)


def test_wrong_password_fails(stored_hash: str) -> None:
    """Another password does not verify."""
    assert not verify_password("correct horse ", stored_hash)


def test_same_password_hashes_differently() -> None:
    """Each hash gets a fresh salt."""
    assert hash_password("pw") != hash_password("pw")


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "garbage",
        "bcrypt$16384$8$1$AAAA$AAAA",
        "scrypt$16384$8$1$AAAA",
        "scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$x$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$16384$8$1$not base64!$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ],
)
def test_malformed_hash_does_not_verify(encoded: str) -> None:
    """A malformed or hostile hash returns False instead of raising."""
    assert verify_password("pw", encoded) is False


def test_dummy_hash_is_well_formed_and_matches_nothing() -> None:
    """DUMMY_HASH parses with current parameters and rejects a guess."""
    assert not needs_rehash(DUMMY_HASH)
    assert not verify_password("admin", DUMMY_HASH)


def test_lone_surrogate_password_hashes() -> None:
    """A password with a lone surrogate (valid JSON) hashes and verifies."""
    assert verify_password("\ud800x", hash_password("\ud800x"))


def test_needs_rehash_flags_weaker_parameters() -> None:
    """A hash with other scrypt parameters should be replaced."""
    weak = "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    assert needs_rehash(weak)


# -- permissions ------------------------------------------------------------------


def test_star_matches_any_suffix() -> None:
    """orders.* covers orders.eu but not orders."""
    permission = Permission(pattern="orders.*", actions=(Action.PUBLISH,))
    assert permission.matches("orders.eu")
    assert not permission.matches("orders")


def test_question_mark_matches_one_character() -> None:
    """q? covers q1 but not q12."""
    permission = Permission(pattern="q?", actions=(Action.CONSUME,))
    assert permission.matches("q1")
    assert not permission.matches("q12")


def test_pattern_is_literal_apart_from_wildcards() -> None:
    """Regex and bracket characters in a pattern match only themselves."""
    permission = Permission(pattern="a.[b]+", actions=(Action.CONSUME,))
    assert permission.matches("a.[b]+")
    assert not permission.matches("aXb")


def test_pattern_is_case_sensitive() -> None:
    """Orders does not cover orders."""
    assert not Permission(pattern="Orders", actions=(Action.MANAGE,)).matches("orders")


def test_user_allowed_by_matching_permission() -> None:
    """A user may do what a matching permission grants, and nothing else."""
    user = _user(permissions=(Permission(pattern="jobs.*", actions=(Action.CONSUME,)),))
    assert allowed(user, Action.CONSUME, "jobs.email")
    assert not allowed(user, Action.PUBLISH, "jobs.email")
    assert not allowed(user, Action.CONSUME, "billing")


def test_manage_does_not_imply_publish() -> None:
    """Actions are independent."""
    user = _user(permissions=(Permission(pattern="*", actions=(Action.MANAGE,)),))
    assert not allowed(user, Action.PUBLISH, "any")


def test_admin_is_always_allowed() -> None:
    """An admin without permissions may do everything."""
    assert allowed(_user(admin=True), Action.MANAGE, "anything")


def test_disabled_user_is_never_allowed() -> None:
    """Disabling a user overrides admin and permissions."""
    assert not allowed(_user(admin=True, disabled=True), Action.CONSUME, "q")


# -- tokens ----------------------------------------------------------------------


def test_short_secret_is_rejected() -> None:
    """HS256 keys under 32 bytes are refused (RFC 7518 section 3.2)."""
    with pytest.raises(ValueError, match="32 bytes"):
        TokenService("short", access_ttl_s=900, refresh_ttl_s=3600)


def test_issued_pair_round_trips(service: TokenService) -> None:
    """Both tokens of a pair verify as their type, for the user."""
    issued = service.issue_pair("alice")
    access = service.verify(issued.pair.access_token, TokenType.ACCESS)
    refresh = service.verify(issued.pair.refresh_token, TokenType.REFRESH)
    assert (access.sub, refresh.sub) == ("alice", "alice")
    assert (issued.pair.token_type, issued.pair.expires_in) == ("bearer", 900)
    assert access.exp - int(access.iat) == 900


def test_refresh_record_matches_refresh_token(service: TokenService) -> None:
    """The record to store names the refresh token's jti, family and expiry."""
    issued = service.issue_pair("alice", family="fam-1", now=1_700_000_000.5)
    claims = jwt.decode(issued.pair.refresh_token, options={"verify_signature": False})
    assert issued.refresh.jti == claims["jti"]
    assert issued.refresh.family == claims["fam"] == "fam-1"
    assert issued.refresh.expires_at == claims["exp"] == 1_700_000_000 + 86_400
    assert (issued.refresh.username, issued.refresh.revoked) == ("alice", False)


def test_new_login_starts_a_new_family(service: TokenService) -> None:
    """Without a family, each pair gets a fresh one."""
    assert service.issue_pair("a").refresh.family != service.issue_pair("a").refresh.family


def test_expired_token_is_rejected(service: TokenService) -> None:
    """A token past its exp (beyond the leeway) is refused."""
    issued = service.issue_pair("alice", now=time.time() - 1000)
    with pytest.raises(InvalidToken, match="expired"):
        service.verify(issued.pair.access_token, TokenType.ACCESS)


def test_refresh_token_is_not_an_access_token(service: TokenService) -> None:
    """A refresh token is refused where an access token is expected."""
    issued = service.issue_pair("alice")
    with pytest.raises(InvalidToken, match="refresh token given"):
        service.verify(issued.pair.refresh_token, TokenType.ACCESS)


def test_access_token_is_not_a_refresh_token(service: TokenService) -> None:
    """An access token is refused where a refresh token is expected."""
    issued = service.issue_pair("alice")
    with pytest.raises(InvalidToken, match="access token given"):
        service.verify(issued.pair.access_token, TokenType.REFRESH)


def test_alg_none_token_is_rejected(service: TokenService) -> None:
    """An unsigned token (alg none) is refused."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{header}.{_b64(json.dumps(_claims()).encode())}."
    with pytest.raises(InvalidToken, match="algorithm"):
        service.verify(token, TokenType.ACCESS)


def test_rs256_token_is_rejected(service: TokenService) -> None:
    """A token signed with an RSA key is refused: only HS256 is accepted."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(), key, algorithm="RS256")
    with pytest.raises(InvalidToken, match="algorithm"):
        service.verify(token, TokenType.ACCESS)


def test_hs256_signed_with_public_key_is_rejected(service: TokenService) -> None:
    """The RS/HS confusion attack (HMAC keyed with a public key) fails the signature."""
    public_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(_claims()).encode())
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken, match="signature"):
        service.verify(f"{signing_input}.{_b64(signature)}", TokenType.ACCESS)


def test_tampered_payload_is_rejected(service: TokenService) -> None:
    """Changing the payload of a signed token breaks its signature."""
    header, _, signature = service.issue_pair("alice").pair.access_token.split(".")
    forged = _b64(json.dumps(_claims(sub="admin")).encode())
    with pytest.raises(InvalidToken, match="signature"):
        service.verify(f"{header}.{forged}.{signature}", TokenType.ACCESS)


def test_token_from_another_secret_is_rejected(service: TokenService) -> None:
    """A token signed by another broker's secret is refused."""
    other = TokenService("o" * 40, access_ttl_s=900, refresh_ttl_s=3600)
    with pytest.raises(InvalidToken, match="signature"):
        service.verify(other.issue_pair("alice").pair.access_token, TokenType.ACCESS)


def test_future_iat_is_rejected(service: TokenService) -> None:
    """A token issued more than the leeway in the future is refused."""
    issued = service.issue_pair("alice", now=time.time() + 60)
    with pytest.raises(InvalidToken, match="not valid yet"):
        service.verify(issued.pair.access_token, TokenType.ACCESS)


def test_small_clock_skew_is_tolerated(service: TokenService) -> None:
    """A token issued two seconds ahead (another node's clock) is accepted."""
    issued = service.issue_pair("alice", now=time.time() + 2)
    assert service.verify(issued.pair.access_token, TokenType.ACCESS).sub == "alice"


@pytest.mark.parametrize("claim", ["sub", "iss", "exp", "iat", "jti", "type"])
def test_missing_claim_is_rejected(service: TokenService, claim: str) -> None:
    """Each required claim must be present."""
    token = jwt.encode(_claims(**{claim: None}), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match=claim):
        service.verify(token, TokenType.ACCESS)


def test_wrong_issuer_is_rejected(service: TokenService) -> None:
    """A token from another issuer is refused."""
    token = jwt.encode(_claims(iss="someone-else"), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="issuer"):
        service.verify(token, TokenType.ACCESS)


def test_mistyped_claim_is_rejected(service: TokenService) -> None:
    """A claim of the wrong JSON type makes the token malformed."""
    token = jwt.encode(_claims(sub=42), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="malformed"):
        service.verify(token, TokenType.ACCESS)


def test_refresh_token_without_family_is_rejected(service: TokenService) -> None:
    """A refresh token must carry its family."""
    token = jwt.encode(_claims(type="refresh"), SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="family"):
        service.verify(token, TokenType.REFRESH)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 5000])
def test_garbage_token_is_rejected(service: TokenService, token: str) -> None:
    """Non-JWT input raises InvalidToken, never another exception."""
    with pytest.raises(InvalidToken):
        service.verify(token, TokenType.ACCESS)


def test_error_message_never_contains_the_token(service: TokenService) -> None:
    """InvalidToken's message does not echo the token."""
    token = service.issue_pair("alice", now=time.time() - 1000).pair.access_token
    with pytest.raises(InvalidToken) as info:
        service.verify(token, TokenType.ACCESS)
    assert token not in str(info.value)
    assert token.split(".")[1] not in info.value.reason


def test_token_issued_before_revocation_is_not_current(service: TokenService) -> None:
    """A token issued before tokens_valid_after no longer speaks for the user."""
    claims = service.verify(
        service.issue_pair("alice", now=time.time() - 1).pair.access_token, TokenType.ACCESS
    )
    assert not token_is_current(_user(tokens_valid_after=time.time()), claims)


def test_token_issued_right_after_revocation_is_current(service: TokenService) -> None:
    """Within the same second, a token issued after the revocation is still valid."""
    revoked_at = time.time()
    claims = service.verify(
        service.issue_pair("alice", now=revoked_at + 0.01).pair.access_token, TokenType.ACCESS
    )
    assert token_is_current(_user(tokens_valid_after=revoked_at), claims)


def test_token_of_another_user_is_not_current(service: TokenService) -> None:
    """Claims for bob do not speak for alice."""
    claims = service.verify(service.issue_pair("bob").pair.access_token, TokenType.ACCESS)
    assert not token_is_current(_user(), claims)


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        (None, "user deleted"),
        (_user(disabled=True), "user disabled"),
        (_user(tokens_valid_after=1_000.5), "password changed"),
        (_user(tokens_valid_after=1_000.0), None),
    ],
    ids=["deleted", "disabled", "password", "current"],
)
def test_revocation_reason_names_what_changed(user: User | None, reason: str | None) -> None:
    """revocation_reason says why a token no longer speaks for its user, or None."""
    claims = Claims(sub="alice", iss=ISSUER, exp=2_000, iat=1_000.0, jti="j", type=TokenType.ACCESS)
    assert revocation_reason(user, claims) == reason


def test_invalid_token_carries_a_code() -> None:
    """InvalidToken is ``unauthorized`` unless told otherwise (``token_revoked``)."""
    assert InvalidToken("bad").code == "unauthorized"
    assert InvalidToken("gone", code="token_revoked").code == "token_revoked"

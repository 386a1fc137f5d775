"""Authentication and authorization over REST, attacked the way an intruder would.

Also ``GET /auth/me``: the caller's own account, as clients like the dashboard read it.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest

from tests.conftest import ADMIN_PASSWORD, login, make_user

if TYPE_CHECKING:
    from tests.conftest import BrokerServer


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _status(server: BrokerServer, token: str, path: str = "/queues") -> int:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get(path, headers={"Authorization": f"Bearer {token}"})
        return response.status_code


def _as(server: BrokerServer, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"})


async def test_health_needs_no_token(server: BrokerServer) -> None:
    """/health (and the API docs, `tests/transports/rest/test_openapi.py`) answer without a
    token; nothing else does."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/health")).status_code == 200
        for path in ("/queues", "/stats", "/users"):
            response = await http.get(path)
            assert response.status_code == 401, path
            assert response.json()["detail"]


async def test_login_with_oauth2_form(server: BrokerServer) -> None:
    """/login takes the OAuth2 password form and answers a bearer pair."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD})
    body = response.json()
    assert response.status_code == 200
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    assert await _status(server, body["access_token"]) == 200


async def test_wrong_password_is_401(server: BrokerServer) -> None:
    """A wrong password answers 401 with a detail."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/auth/token", json={"username": "admin", "password": "nope"})
    assert response.status_code == 401
    assert response.json()["detail"] == "wrong username or password"


@pytest.mark.parametrize("settings_overrides", [{"rate_auth_per_min": 3}])
async def test_brute_force_login_hits_429(server: BrokerServer) -> None:
    """Repeated failed logins from one address are answered 429 with Retry-After."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        responses = [
            await http.post("/auth/token", json={"username": "admin", "password": "x"})
            for _ in range(5)
        ]
        statuses = [response.status_code for response in responses]
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3:] == [429, 429]
        assert int(responses[-1].headers["retry-after"]) >= 1
        # Even the right password waits: the limiter runs before the check.
        ok = await http.post("/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert ok.status_code == 429


async def _login_status(http: httpx.AsyncClient, username: str, password: str) -> int:
    response = await http.post("/auth/token", json={"username": username, "password": password})
    if response.status_code == 429:
        assert int(response.headers["retry-after"]) >= 1
    return response.status_code


@pytest.mark.parametrize(
    "settings_overrides", [{"rate_auth_user_per_min": 3, "rate_auth_per_min": 6}]
)
async def test_failed_logins_lock_the_username_before_the_address(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Failures lock their username; others at the same address log in until its own limit."""
    await make_user(client, server, "bob", [])
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert [await _login_status(http, "admin", "x") for _ in range(3)] == [401] * 3
        assert await _login_status(http, "admin", ADMIN_PASSWORD) == 429
        assert await _login_status(http, "bob", "bob-password") == 200
        assert [await _login_status(http, name, "x") for name in ("c", "d", "e")] == [401] * 3
        assert await _login_status(http, "bob", "bob-password") == 429


@pytest.mark.parametrize("settings_overrides", [{"rate_login_user_per_min": 3}])
async def test_successful_logins_are_limited_per_username(server: BrokerServer) -> None:
    """Right passwords count too: the fourth login of a minute as one user is 429."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        statuses = [await _login_status(http, "admin", ADMIN_PASSWORD) for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


@pytest.mark.parametrize("settings_overrides", [{"rate_login_per_min": 4}])
async def test_login_attempts_are_limited_per_address(server: BrokerServer) -> None:
    """Attempts under many usernames from one address are limited by the address."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        statuses = [await _login_status(http, f"user{n}", "x") for n in range(5)]
    assert statuses == [401, 401, 401, 401, 429]


async def test_pathological_permission_pattern_is_answered_rightly(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A pattern of 40 stars is checked against 200-character names without backtracking."""
    hit, miss = "b" * 199 + "a", "a" * 199 + "b"
    for name in (hit, miss):
        assert (await client.post("/queues", json={"name": name})).status_code == 201
    pattern = "*" * 40 + "a"
    token = await make_user(
        client, server, "starry", [{"pattern": pattern, "actions": ["consume"]}]
    )
    async with _as(server, token) as http:
        response = await http.get("/queues")
    assert response.status_code == 200, response.text
    assert [queue["name"] for queue in response.json()] == [hit]


async def test_alg_none_token_is_refused(server: BrokerServer) -> None:
    """A token with ``alg: none`` is refused."""
    now = int(time.time())
    claims = {"sub": "admin", "iss": "wsbroker", "iat": now, "exp": now + 60, "jti": "x",
              "type": "access"}  # fmt: skip
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert await _status(server, token) == 401


async def test_tampered_payload_is_refused(server: BrokerServer, admin_token: str) -> None:
    """Changing the payload of a valid token breaks its signature."""
    header, _, signature = admin_token.split(".")
    now = int(time.time())
    claims = {"sub": "someone", "iss": "wsbroker", "iat": now, "exp": now + 60, "jti": "x",
              "type": "access"}  # fmt: skip
    assert await _status(server, f"{header}.{_b64(claims)}.{signature}") == 401


async def test_token_signed_with_other_key_is_refused(server: BrokerServer) -> None:
    """A well-formed token signed with another secret is refused."""
    now = time.time()
    token = jwt.encode(
        {
            "sub": "admin",
            "iss": "wsbroker",
            "iat": now,
            "exp": now + 60,
            "jti": "x",
            "type": "access",
        },
        "another-secret-that-is-long-enough-32b",
        algorithm="HS256",
    )
    assert await _status(server, token) == 401


async def test_refresh_token_is_not_an_access_token(server: BrokerServer) -> None:
    """A refresh token can't be used as a bearer access token."""
    pair = await login(server.url)
    assert await _status(server, pair["refresh_token"]) == 401


async def test_refresh_rotates_and_reuse_revokes_family(server: BrokerServer) -> None:
    """Refreshing twice with the same token revokes the whole family."""
    pair = await login(server.url)
    async with httpx.AsyncClient(base_url=server.url) as http:
        first = await http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert first.status_code == 200
        rotated = first.json()
        reuse = await http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert reuse.status_code == 401
        # The thief's reuse also ended the legitimate newer token of the family.
        later = await http.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
        assert later.status_code == 401


async def test_refresh_family_revocation_survives_restart(server: BrokerServer) -> None:
    """A used refresh token stays used after a restart (kept in storage)."""
    pair = await login(server.url)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (
            await http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        ).status_code == 200
    await server.restart()
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 401


async def test_logout_revokes_refresh(server: BrokerServer, admin_token: str) -> None:
    """After logout the refresh token no longer works."""
    pair = await login(server.url)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {admin_token}"}
    ) as http:
        body = {"refresh_token": pair["refresh_token"]}
        assert (await http.post("/auth/logout", json=body)).status_code == 204
        assert (await http.post("/auth/refresh", json=body)).status_code == 401


async def test_password_change_revokes_tokens(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Changing a user's password invalidates its access and refresh tokens."""
    await make_user(client, server, "carol", [{"pattern": "*", "actions": ["publish"]}])
    pair = await login(server.url, "carol", "carol-password")
    assert await _status(server, pair["access_token"]) == 200
    response = await client.patch("/users/carol", json={"password": "a-brand-new-password"})
    assert response.status_code == 200
    assert await _status(server, pair["access_token"]) == 401
    async with httpx.AsyncClient(base_url=server.url) as http:
        refresh = await http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refresh.status_code == 401


async def test_deleted_user_tokens_stop_working(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Deleting a user ends its tokens at once."""
    await make_user(client, server, "dave", [])
    token = (await login(server.url, "dave", "dave-password"))["access_token"]
    assert (await client.delete("/users/dave")).status_code == 204
    assert await _status(server, token) == 401


async def test_non_admin_cannot_manage_users(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Only admins reach /users."""
    erin_token = await make_user(
        client, server, "erin", [{"pattern": "*", "actions": ["publish", "consume", "manage"]}]
    )
    async with _as(server, erin_token) as erin:
        assert (await erin.get("/users")).status_code == 403
        response = await erin.post(
            "/users", json={"username": "mallory", "password": "12345678", "admin": True}
        )
        assert response.status_code == 403


async def test_user_listing_never_shows_hashes(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """The user API shows no password hash."""
    await make_user(client, server, "frank", [])
    listed = (await client.get("/users")).text
    assert "scrypt" not in listed
    assert "password" not in listed


async def test_queue_permissions_are_enforced(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """User A can't see, publish to, consume from, browse or settle user B's queue."""
    for name in ("a.jobs", "b.jobs"):
        assert (await client.post("/queues", json={"name": name})).status_code == 201
    alice_token = await make_user(
        client, server, "alice", [{"pattern": "a.*", "actions": ["publish", "consume"]}]
    )
    bob_token = await make_user(
        client, server, "bob", [{"pattern": "b.*", "actions": ["publish", "consume"]}]
    )
    published = await client.post("/queues/b.jobs/messages", json={"content": "secret"})
    message_id = published.json()["message_id"]
    async with (
        _as(server, alice_token) as alice,
        _as(server, bob_token) as bob,
    ):
        assert [q["name"] for q in (await alice.get("/queues")).json()] == ["a.jobs"]
        assert (await alice.get("/queues/b.jobs")).status_code == 404
        assert (await alice.post("/queues/b.jobs/messages", json={"content": 1})).status_code == 404
        assert (await alice.get("/queues/b.jobs/messages/consume")).status_code == 404
        assert (await alice.get("/queues/b.jobs/messages")).status_code == 404
        assert (await alice.get(f"/queues/b.jobs/messages/{message_id}")).status_code == 404
        assert (await alice.post("/queues/b.jobs/purge")).status_code == 404
        assert (await alice.delete("/queues/b.jobs")).status_code == 404
        # Bob leases it; Alice guesses its id and can't settle it.
        leased = await bob.get("/queues/b.jobs/messages/consume")
        assert leased.json()["messages"][0]["message_id"] == message_id
        for path in (f"/messages/{message_id}/ack", f"/messages/{message_id}/nack"):
            assert (await alice.post(path)).status_code == 409
        touch = await alice.post(f"/messages/{message_id}/touch", json={"lease": 60})
        assert touch.status_code == 409
        settled = (await alice.post("/messages/ack", json={"ids": [message_id]})).json()
        assert settled["settled"] == []
        assert (await bob.post(f"/messages/{message_id}/ack")).status_code == 200


async def test_manage_is_needed_to_create_queues(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """Publish rights don't let a user create, purge or delete queues."""
    await client.post("/queues", json={"name": "c.jobs"})
    cora_token = await make_user(
        client, server, "cora", [{"pattern": "c.*", "actions": ["publish"]}]
    )
    async with _as(server, cora_token) as cora:
        assert (await cora.post("/queues", json={"name": "c.new"})).status_code == 403
        assert (await cora.post("/queues/c.jobs/purge")).status_code == 403
        assert (await cora.delete("/queues/c.jobs")).status_code == 403
        assert (await cora.post("/queues/c.jobs/messages", json={"content": 1})).status_code == 201


@pytest.mark.parametrize("settings_overrides", [{"rate_publish_per_s": 2}])
async def test_publish_rate_limit_answers_429(client: httpx.AsyncClient) -> None:
    """A user over its publish rate gets 429 with Retry-After; other route classes still work."""
    await client.post("/queues", json={"name": "jobs"})
    statuses = [
        (await client.post("/queues/jobs/messages", json={"content": i})).status_code
        for i in range(4)
    ]
    assert statuses[:2] == [201, 201]
    assert 429 in statuses[2:]
    limited = await client.post("/queues/jobs/messages", json={"content": "x"})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert (await client.get("/queues/jobs")).json()["pending"] == 2


async def test_routing_404_carries_security_headers(server: BrokerServer) -> None:
    """Even a path no route matches answers with the security headers."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("settings_overrides", [{"access_token_ttl_s": 1}])
async def test_expired_access_token_is_refused_though_seen_before(server: BrokerServer) -> None:
    """A token accepted (and cached as verified) is refused once past its expiry and leeway."""
    import asyncio

    token = (await login(server.url))["access_token"]
    assert await _status(server, token) == 200
    await asyncio.sleep(7)  # 1 s lifetime + the 5 s clock leeway, and a margin
    assert await _status(server, token) == 401


async def test_me_shows_the_admin(client: httpx.AsyncClient) -> None:
    """An admin sees its name and admin flag, and no password hash."""
    response = await client.get("/auth/me")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["username"] == "admin"
    assert body["admin"] is True
    assert body["permissions"] == []
    assert "password_hash" not in body


async def test_me_shows_a_users_permissions(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A user sees exactly the permissions an admin gave it."""
    permissions = [
        {"pattern": "orders.*", "actions": ["publish", "consume"]},
        {"pattern": "audit", "actions": ["manage"]},
    ]
    token = await make_user(client, server, "alice", permissions)
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["username"] == "alice"
    assert body["admin"] is False
    assert body["permissions"] == permissions


async def test_me_needs_a_token(server: BrokerServer) -> None:
    """Without a bearer token /auth/me answers 401 like every other route."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/auth/me")
    assert response.status_code == 401

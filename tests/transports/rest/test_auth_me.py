"""``GET /auth/me``: the caller's own account, as clients like the dashboard read it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from tests.conftest import make_user

if TYPE_CHECKING:
    from tests.conftest import BrokerServer


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

"""``broker tokens ...`` as a subprocess against a real server."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer
    from tests.transports.cli.cli_helpers import Cli


async def test_create_list_use_revoke(
    logged_in: Cli, server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """The token printed once reads /metrics; listed without its secret; revoked: 401."""
    created = (
        await logged_in.ok("tokens", "create", "prometheus", "--scope", "metrics:read", "--json")
    ).json()
    secret, id = created["token"], created["id"]
    bearer = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/metrics", headers=bearer)).status_code == 200
    await client.post("/queues", json={"name": "jobs"})
    assert (await client.get("/queues", headers=bearer)).json() == []  # no queue scope
    table = (await logged_in.ok("tokens")).out.splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "SCOPES"]
    assert table[1].split()[:2] == [id, "prometheus"]
    assert secret not in (await logged_in.ok("tokens", "list", "--json")).out
    await logged_in.ok("tokens", "revoke", id, "--yes")
    assert (await client.get("/metrics", headers=bearer)).status_code == 401
    again = await logged_in("tokens", "revoke", id, "--yes")
    assert again.code == 1


async def test_bad_scope_and_instant_are_refused(logged_in: Cli) -> None:
    """An unknown scope is the broker's 422; a naive instant is refused before any request."""
    bad = await logged_in("tokens", "create", "x", "--scope", "fly:everything")
    assert bad.code == 1 and "scope" in bad.err
    naive = await logged_in(
        "tokens", "create", "x", "--scope", "stats:read", "--expires-at", "2030-01-01T00:00:00"
    )
    assert naive.code == 1 and "offset" in naive.err

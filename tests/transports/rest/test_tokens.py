"""Service tokens end to end: created by admins, scoped, usable as bearer tokens, revoked at once.

Every test runs on both storage backends (PostgreSQL skips when no server
answers on 127.0.0.1:5432).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MS, make_user
from tests.storage.pg_database import temporary_database
from tests.transports.test_revocation import (
    LEGACY_WS,
    MESSAGES,
    REVOKED_WITHIN,
    TRANSPORT_WS,
    GraphQLSocket,
    closed_within,
    recv_within,
)
from tests.transports.ws.test_endpoint import make_queue, open_ws, publish_rest, subscribe

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from tests.conftest import BrokerServer


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings_overrides(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The server of each test on SQLite, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield {}
    else:
        with temporary_database() as url:
            yield {"storage_url": url}


async def create_token(client: httpx.AsyncClient, *scopes: str, **extra: Any) -> dict[str, Any]:
    """Create a service token with ``scopes`` as the admin; the 201 body."""
    response = await client.post(
        "/tokens", json={"name": "machine", "scopes": list(scopes), **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def as_token(server: BrokerServer) -> AsyncIterator[Any]:
    """Make an HTTP client that sends a given service token."""
    clients: list[httpx.AsyncClient] = []

    def make(token: str) -> httpx.AsyncClient:
        http = httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        clients.append(http)
        return http

    yield make
    for http in clients:
        await http.aclose()


# -- create, list, revoke -----------------------------------------------------------------


async def test_the_token_is_shown_once_and_listed_without_its_secret(
    client: httpx.AsyncClient,
) -> None:
    """POST /tokens answers the token; GET /tokens and GET /tokens/{id} never show it again."""
    created = await create_token(client, "metrics:read", "publish:orders.*")
    assert created["token"].startswith("wsb_")
    assert created["scopes"] == ["metrics:read", "publish:orders.*"]
    assert created["created_by"] == "admin"
    listed = (await client.get("/tokens")).json()
    assert [t["id"] for t in listed] == [created["id"]]
    one = (await client.get(f"/tokens/{created['id']}")).json()
    for view in (listed[0], one):
        assert "token" not in view and "secret_hash" not in view
        assert created["token"] not in str(view)


async def test_the_token_is_stored_as_a_hash(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """The storage holds the SHA-256 of the token, not the token."""
    import hashlib

    created = await create_token(client, "stats:read")
    document = await server.ctx.storage.accounts.get_service_token(created["id"])
    assert created["token"].encode() not in document
    assert hashlib.sha256(created["token"].encode()).hexdigest().encode() in document


async def test_only_admins_manage_tokens(
    server: BrokerServer, client: httpx.AsyncClient, as_token: Any
) -> None:
    """A user without admin, and a service token of any scope, get 403 on /tokens."""
    user = await make_user(client, server, "ursula", [{"pattern": "*", "actions": ["manage"]}])
    machine = as_token((await create_token(client, "manage:*", "metrics:read"))["token"])
    for http in (as_token(user), machine):
        assert (await http.get("/tokens")).status_code == 403
        response = await http.post("/tokens", json={"name": "x", "scopes": ["stats:read"]})
        assert response.status_code == 403, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": ["metrics:write"]}, "scopes"),
        ({"name": "x", "scopes": ["publish"]}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["stats:read"], "scope": "typo"}, "scope"),
        (
            {"name": "x", "scopes": ["stats:read"], "expires_at": "2020-01-01T00:00:00Z"},
            "expires_at",
        ),
        (
            {"name": "x", "scopes": ["stats:read"], "expires_at": "2999-01-01T00:00:00"},
            "expires_at",
        ),
    ],
)
async def test_a_bad_request_is_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    """Unknown scopes, no scope, unknown fields, past or zone-less expiry: 422 naming the field."""
    response = await client.post("/tokens", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_revocation_is_immediate(client: httpx.AsyncClient, as_token: Any) -> None:
    """After DELETE /tokens/{id} the very next request with the token is 401."""
    created = await create_token(client, "stats:read")
    machine = as_token(created["token"])
    assert (await machine.get("/stats")).status_code == 200
    assert (await client.delete(f"/tokens/{created['id']}")).status_code == 204
    assert (await machine.get("/stats")).status_code == 401
    assert (await client.get("/tokens")).json() == []
    assert (await client.delete(f"/tokens/{created['id']}")).status_code == 404


async def test_a_wrong_secret_with_a_real_id_is_401(
    client: httpx.AsyncClient, as_token: Any
) -> None:
    """A token whose id exists but whose secret differs is refused."""
    created = await create_token(client, "stats:read")
    forged = created["token"][:-4] + "AAAA"
    assert (await as_token(forged).get("/stats")).status_code == 401


async def test_an_expired_token_is_401(client: httpx.AsyncClient, as_token: Any) -> None:
    """A token past its expires_at is refused."""
    soon = datetime.now(UTC) + timedelta(milliseconds=1000)
    created = await create_token(client, "stats:read", expires_at=soon.isoformat())
    machine = as_token(created["token"])
    assert (await machine.get("/stats")).status_code == 200
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 100 * MS)
    assert (await machine.get("/stats")).status_code == 401


async def test_a_token_survives_a_restart(server: BrokerServer, client: httpx.AsyncClient) -> None:
    """A service token works after the broker restarts (it is stored, not in memory)."""
    created = await create_token(client, "stats:read")
    await server.restart()
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {created['token']}"}
    ) as machine:
        assert (await machine.get("/stats")).status_code == 200


# -- scopes -------------------------------------------------------------------------------


async def test_metrics_read_scrapes_prometheus_text_of_every_queue(
    client: httpx.AsyncClient, as_token: Any
) -> None:
    """A metrics:read token scrapes /metrics, which prometheus_client parses, every queue in it."""
    await make_queue(client, "orders")
    await publish_rest(client, [1, 2], "orders")
    machine = as_token((await create_token(client, "metrics:read"))["token"])
    response = await machine.get("/metrics")
    assert response.status_code == 200, response.text
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    published = [
        s.value
        for s in families["broker_messages_published"].samples
        if s.labels == {"queue": "orders"} and s.name == "broker_messages_published_total"
    ]
    assert published == [2]
    assert (await machine.get("/stats")).status_code == 403
    assert (await machine.get("/queues/orders")).status_code == 404
    assert (await machine.get("/logs")).status_code == 403


async def test_stats_read_reads_stats_but_not_metrics(
    client: httpx.AsyncClient, as_token: Any
) -> None:
    """A stats:read token gets /stats with every queue, and 403 on /metrics."""
    await make_queue(client, "orders")
    machine = as_token((await create_token(client, "stats:read"))["token"])
    stats = (await machine.get("/stats")).json()
    assert [q["name"] for q in stats["broker_specific"]["queues"]] == ["orders"]
    assert (await machine.get("/metrics")).status_code == 403


async def test_publish_scope_publishes_only_where_its_pattern_matches(
    client: httpx.AsyncClient, as_token: Any
) -> None:
    """publish:orders.* publishes to orders.eu; elsewhere 404, consuming 403, metrics 403."""
    await make_queue(client, "orders.eu")
    await make_queue(client, "billing")
    machine = as_token((await create_token(client, "publish:orders.*"))["token"])
    ok = await machine.post("/queues/orders.eu/messages", json={"content": "x"})
    assert ok.status_code == 201, ok.text
    assert (
        await machine.post("/queues/billing/messages", json={"content": "x"})
    ).status_code == 404
    assert (await machine.get("/queues/orders.eu/messages/consume")).status_code == 403
    assert (await machine.get("/metrics")).status_code == 403
    assert (await machine.delete("/queues/orders.eu")).status_code == 403


async def test_consume_scope_pulls_and_acks(client: httpx.AsyncClient, as_token: Any) -> None:
    """consume:jobs pulls a message and acks it over REST."""
    await make_queue(client, "jobs")
    await publish_rest(client, ["work"])
    machine = as_token((await create_token(client, "consume:jobs"))["token"])
    pulled = await machine.get("/queues/jobs/messages/consume")
    assert pulled.status_code == 200, pulled.text
    body = pulled.json()
    message = body["messages"][0] if "messages" in body else body
    ack = await machine.post(f"/messages/{message['message_id']}/ack")
    assert ack.status_code in (200, 204), ack.text


async def test_manage_scope_creates_queues_it_matches(
    client: httpx.AsyncClient, as_token: Any
) -> None:
    """manage:tmp.* creates tmp.a and is refused tmp-less names."""
    machine = as_token((await create_token(client, "manage:tmp.*"))["token"])
    assert (await machine.post("/queues", json={"name": "tmp.a"})).status_code == 201
    assert (await machine.post("/queues", json={"name": "prod"})).status_code in (403, 404)


# -- sessions: WebSocket and GraphQL ------------------------------------------------------


async def test_revoking_ends_its_websocket_within_a_second(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A /ws consumer on a service token is closed 4003 within 1 s of revocation; requeued."""
    await make_queue(client)
    created = await create_token(client, "consume:jobs")
    async with await open_ws(server, created["token"]) as ws:
        await subscribe(ws, prefetch=2)
        await publish_rest(client, [1, 2])
        assert (await recv_within(ws, 5000 * MS))["op"] == "deliver"
        assert (await client.delete(f"/tokens/{created['id']}")).status_code == 204
        code, _ = await closed_within(ws, REVOKED_WITHIN)
    assert code == 4003
    info = (await client.get("/queues/jobs")).json()
    assert (info["pending"], info["processing"]) == (2, 0)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_revoking_ends_its_graphql_subscription_within_a_second(
    server: BrokerServer, client: httpx.AsyncClient, protocol: str
) -> None:
    """A GraphQL subscription on a service token ends with an error revoked within 1 s."""
    await make_queue(client)
    created = await create_token(client, "consume:jobs")
    socket = await GraphQLSocket.open(server, protocol, created["token"])
    async with socket.ws:
        await socket.subscribe("1", MESSAGES, q="jobs")
        await publish_rest(client, ["job"])
        assert (await socket.next(5000 * MS))["type"] == "next"
        assert (await client.delete(f"/tokens/{created['id']}")).status_code == 204
        message = await socket.next(REVOKED_WITHIN)
    assert (message["type"], message["id"]) == ("next", "1"), message
    [detail] = message["payload"]["errors"]
    assert detail["extensions"]["code"] == "revoked", detail


async def test_a_token_without_consume_cannot_subscribe_over_websocket(
    server: BrokerServer, client: httpx.AsyncClient
) -> None:
    """A publish-only token is refused a /ws subscription."""
    await make_queue(client)
    created = await create_token(client, "publish:jobs")
    async with await open_ws(server, created["token"]) as ws:
        await ws.send('{"op": "subscribe", "queue": "jobs", "prefetch": 1, "ref": "s"}')
        reply = await recv_within(ws, 5000 * MS)
    assert reply["op"] == "error" and reply["code"] == "forbidden", reply


async def test_a_token_works_over_graphql_http_and_the_ws_auth_frame(
    server: BrokerServer, client: httpx.AsyncClient, as_token: Any
) -> None:
    """A publish token publishes through GraphQL over HTTP and over /ws after an auth frame."""
    await make_queue(client)
    created = await create_token(client, "publish:jobs")
    mutation = 'mutation { publish(queue: "jobs", content: 1) { messageId } }'
    answer = (await as_token(created["token"]).post("/graphql", json={"query": mutation})).json()
    assert "errors" not in answer, answer
    async with await open_ws(server, None) as ws:
        await ws.send(json.dumps({"op": "auth", "token": created["token"]}))
        await ws.send(json.dumps({"op": "publish", "queue": "jobs", "content": 2, "ref": "p"}))
        frames = [await recv_within(ws, 5000 * MS) for _ in range(2)]
    assert frames[-1]["op"] == "confirm", frames
    assert (await client.get("/queues/jobs")).json()["pending"] == 2


async def test_graphql_stats_needs_stats_read_as_rest_does(
    client: httpx.AsyncClient, as_token: Any
) -> None:
    """The GraphQL stats query answers a stats:read token and refuses a publish-only one."""
    query = {"query": "{ stats { queuesTotal } }"}
    reader = as_token((await create_token(client, "stats:read"))["token"])
    assert (await reader.post("/graphql", json=query)).json() == {
        "data": {"stats": {"queuesTotal": 0}}
    }
    publisher = as_token((await create_token(client, "publish:*"))["token"])
    refused = (await publisher.post("/graphql", json=query)).json()
    assert refused["errors"][0]["extensions"]["code"] == "forbidden", refused


async def test_graphql_creates_lists_and_revokes_tokens(
    client: httpx.AsyncClient, as_token: Any
) -> None:
    """createServiceToken, serviceTokens and revokeServiceToken do what /tokens does."""
    create = (
        'mutation { createServiceToken(name: "prom", scopes: ["metrics:read"]) '
        "{ id token scopes } }"
    )
    created = (await client.post("/graphql", json={"query": create})).json()["data"]
    token = created["createServiceToken"]
    assert token["token"].startswith("wsb_") and token["scopes"] == ["metrics:read"]
    listed = (await client.post("/graphql", json={"query": "{ serviceTokens { id name } }"})).json()
    assert listed == {"data": {"serviceTokens": [{"id": token["id"], "name": "prom"}]}}
    machine = as_token(token["token"])
    assert (await machine.get("/metrics")).status_code == 200
    refused = (await machine.post("/graphql", json={"query": "{ serviceTokens { id } }"})).json()
    assert refused["errors"][0]["extensions"]["code"] == "forbidden", refused
    revoke = f'mutation {{ revokeServiceToken(id: "{token["id"]}") }}'
    assert (await client.post("/graphql", json={"query": revoke})).json() == {
        "data": {"revokeServiceToken": True}
    }
    assert (await machine.get("/metrics")).status_code == 401


async def test_graphql_refuses_a_bad_scope_naming_the_field(client: httpx.AsyncClient) -> None:
    """An unknown scope in createServiceToken is an invalid-input error naming scopes."""
    create = 'mutation { createServiceToken(name: "x", scopes: ["root"]) { id } }'
    answer = (await client.post("/graphql", json={"query": create})).json()
    [error] = answer["errors"]
    assert error["extensions"]["status"] == 422 and "scopes" in error["message"], error

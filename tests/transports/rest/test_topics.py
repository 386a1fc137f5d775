"""Topics over REST: create, bind, route, publish atomically, bad input, permissions, restart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from tests.conftest import make_user

if TYPE_CHECKING:
    from tests.conftest import BrokerServer


async def _queue(client: httpx.AsyncClient, name: str, **options: Any) -> None:
    response = await client.post("/queues", json={"name": name, **options})
    assert response.status_code == 201, response.text


async def _topic(client: httpx.AsyncClient, name: str, **bindings: list[str]) -> None:
    response = await client.post("/topics", json={"name": name})
    assert response.status_code == 201, response.text
    for queue, patterns in bindings.items():
        for pattern in patterns:
            bound = await client.post(
                f"/topics/{name}/bindings", json={"queue": queue, "pattern": pattern}
            )
            assert bound.status_code == 201, bound.text


async def _pending(client: httpx.AsyncClient, queue: str) -> int:
    return int((await client.get(f"/queues/{queue}")).json()["pending"])


async def _publish(
    client: httpx.AsyncClient, topic: str, key: str, content: Any = "m", **extra: Any
) -> httpx.Response:
    return await client.post(
        f"/topics/{topic}/publish", json={"routing_key": key, "content": content, **extra}
    )


async def test_topic_is_created_listed_and_deleted(client: httpx.AsyncClient) -> None:
    """POST /topics is 201, shows in GET /topics and GET /topics/{name}, DELETE is 204."""
    await _queue(client, "q")
    await _topic(client, "orders", q=["orders.*"])
    [listed] = (await client.get("/topics")).json()
    assert listed["name"] == "orders"
    assert [(b["queue"], b["pattern"]) for b in listed["bindings"]] == [("q", "orders.*")]
    assert (await client.get("/topics/orders")).json()["bindings"][0]["topic"] == "orders"
    assert (await client.delete("/topics/orders")).status_code == 204
    assert (await client.get("/topics/orders")).status_code == 404
    assert (await client.get("/topics")).json() == []


async def test_creating_a_topic_twice_is_409(client: httpx.AsyncClient) -> None:
    """A second POST /topics of one name is 409 topic_exists."""
    await _topic(client, "t")
    response = await client.post("/topics", json={"name": "t"})
    assert response.status_code == 409
    assert response.json()["code"] == "topic_exists"


async def test_publish_routes_to_each_matching_queue_once(client: httpx.AsyncClient) -> None:
    """A key matched by two bindings of one queue reaches it once; unmatched queues get none."""
    for name in ("eu", "all", "us"):
        await _queue(client, name)
    await _topic(
        client, "orders", eu=["orders.eu.*", "*.eu.created"], all=["#"], us=["orders.us.#"]
    )
    response = await _publish(client, "orders", "orders.eu.created", {"n": 1}, priority=3)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["routing_key"] == "orders.eu.created"
    assert sorted(r["queue"] for r in body["routed"]) == ["all", "eu"]
    assert [await _pending(client, q) for q in ("eu", "all", "us")] == [1, 1, 0]
    consumed = await client.get("/queues/eu/messages/consume")
    [message] = consumed.json()["messages"]
    assert message["content"] == {"n": 1}
    assert (
        message["message_id"] == next(r for r in body["routed"] if r["queue"] == "eu")["message_id"]
    )


async def test_publish_without_a_match_routes_nothing(client: httpx.AsyncClient) -> None:
    """A key no binding matches answers 201 with routed: []."""
    await _queue(client, "q")
    await _topic(client, "t", q=["a.b"])
    response = await _publish(client, "t", "a.c")
    assert response.status_code == 201
    assert response.json() == {"routing_key": "a.c", "routed": []}
    assert await _pending(client, "q") == 0


async def test_full_queue_refuses_the_whole_publish(client: httpx.AsyncClient) -> None:
    """A matched queue full with reject_publish refuses the publish; no queue gets a copy."""
    await _queue(client, "roomy")
    await _queue(client, "full", max_length=1, overflow="reject_publish")
    await _topic(client, "t", roomy=["#"], full=["#"])
    assert (await _publish(client, "t", "x")).status_code == 201
    response = await _publish(client, "t", "x")
    assert response.status_code == 409
    assert response.json()["code"] == "queue_full"
    assert await _pending(client, "roomy") == 1
    assert await _pending(client, "full") == 1


async def test_per_message_options_reach_every_copy(client: httpx.AsyncClient) -> None:
    """Headers, delay and dedup apply to each routed copy."""
    await _queue(client, "a")
    await _queue(client, "b")
    await _topic(client, "t", a=["k"], b=["k"])
    first = await _publish(client, "t", "k", headers={"h": "v"}, dedup_id="d1", group="g")
    again = await _publish(client, "t", "k", headers={"h": "v"}, dedup_id="d1")
    assert first.status_code == again.status_code == 201
    assert [r["message_id"] for r in first.json()["routed"]] == [
        r["message_id"] for r in again.json()["routed"]
    ]
    assert all(r["duplicate"] for r in again.json()["routed"])
    [message] = (await client.get("/queues/a/messages/consume")).json()["messages"]
    assert message["headers"] == {"h": "v"}
    delayed = await _publish(client, "t", "k", delay_ms=60_000)
    assert delayed.status_code == 201
    assert (await client.get("/queues/b")).json()["delayed"] == 1


async def test_route_shows_the_queues_a_key_reaches(client: httpx.AsyncClient) -> None:
    """GET /topics/{name}/route lists matched queues and publishes nothing."""
    await _queue(client, "a")
    await _queue(client, "b")
    await _topic(client, "t", a=["a.#.b"], b=["*.*"])
    route = await client.get("/topics/t/route", params={"routing_key": "a.b"})
    assert route.json() == {"topic": "t", "routing_key": "a.b", "queues": ["a", "b"]}
    route = await client.get("/topics/t/route", params={"routing_key": "a.x.y.b"})
    assert route.json()["queues"] == ["a"]
    assert await _pending(client, "a") == 0


async def test_unbind_stops_routing(client: httpx.AsyncClient) -> None:
    """DELETE /topics/{name}/bindings removes one binding; a second time it is 404."""
    await _queue(client, "q")
    await _topic(client, "t", q=["a.*"])
    body = {"queue": "q", "pattern": "a.*"}
    assert (await client.request("DELETE", "/topics/t/bindings", json=body)).status_code == 204
    assert (await _publish(client, "t", "a.b")).json()["routed"] == []
    again = await client.request("DELETE", "/topics/t/bindings", json=body)
    assert again.status_code == 404
    assert again.json()["code"] == "binding_not_found"


async def test_deleted_queue_takes_its_bindings(client: httpx.AsyncClient) -> None:
    """Deleting a queue removes its bindings from every topic."""
    await _queue(client, "q")
    await _queue(client, "other")
    await _topic(client, "t", q=["#"], other=["#"])
    assert (await client.delete("/queues/q")).status_code == 204
    bindings = (await client.get("/topics/t")).json()["bindings"]
    assert [b["queue"] for b in bindings] == ["other"]
    assert [r["queue"] for r in (await _publish(client, "t", "x")).json()["routed"]] == ["other"]


async def test_bad_input_is_a_precise_4xx(client: httpx.AsyncClient) -> None:
    """Empty words, wildcards in keys, bad names, unknown topic or queue: 4xx naming it."""
    await _queue(client, "q")
    await _topic(client, "t")
    cases = [
        ("POST", "/topics", {"name": "bad name"}, 422, "invalid"),
        ("POST", "/topics", {"name": "t", "extra": 1}, 422, "unknown_field"),
        ("POST", "/topics/t/bindings", {"queue": "q", "pattern": "a..b"}, 422, "invalid"),
        ("POST", "/topics/t/bindings", {"queue": "q", "pattern": "a.b*"}, 422, "invalid"),
        ("POST", "/topics/t/bindings", {"queue": "nope", "pattern": "a"}, 404, "queue_not_found"),
        ("POST", "/topics/none/bindings", {"queue": "q", "pattern": "a"}, 404, "topic_not_found"),
        ("POST", "/topics/t/publish", {"routing_key": "a.*", "content": 1}, 422, "invalid"),
        ("POST", "/topics/t/publish", {"routing_key": "a.#", "content": 1}, 422, "invalid"),
        ("POST", "/topics/t/publish", {"routing_key": ".a", "content": 1}, 422, "invalid"),
        ("POST", "/topics/t/publish", {"routing_key": "a", "content": 1, "grp": 1}, 422, None),
        ("POST", "/topics/none/publish", {"routing_key": "a", "content": 1}, 404, None),
    ]
    for method, path, body, status, code in cases:
        response = await client.request(method, path, json=body)
        assert response.status_code == status, (path, body, response.text)
        if code is not None:
            assert response.json()["code"] == code, (body, response.text)
    detail = (await _publish(client, "t", "a..b")).json()["detail"]
    assert "routing_key" in detail
    route = await client.get("/topics/t/route", params={"routing_key": "a.*"})
    assert route.status_code == 422


async def test_permissions_follow_topic_names(
    client: httpx.AsyncClient, server: BrokerServer
) -> None:
    """publish needs publish on the topic; bind needs manage on topic and queue."""
    await _queue(client, "mine")
    await _queue(client, "theirs")
    await _topic(client, "orders", mine=["#"])
    await _topic(client, "secret")
    token = await make_user(
        client,
        server,
        "pub",
        [
            {"pattern": "orders", "actions": ["publish"]},
            {"pattern": "mine", "actions": ["manage"]},
        ],
    )
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as user:
        assert (await _publish(user, "orders", "x")).status_code == 201
        assert (await _publish(user, "secret", "x")).status_code == 404
        assert [t["name"] for t in (await user.get("/topics")).json()] == ["orders"]
        bind = await user.post("/topics/orders/bindings", json={"queue": "mine", "pattern": "a"})
        assert bind.status_code == 403  # publish on the topic, not manage
        assert (await user.delete("/topics/orders")).status_code == 403
    token = await make_user(
        client,
        server,
        "ops",
        [{"pattern": "orders", "actions": ["manage"]}, {"pattern": "mine", "actions": ["manage"]}],
    )
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as user:
        bind = await user.post("/topics/orders/bindings", json={"queue": "mine", "pattern": "a"})
        assert bind.status_code == 201
        hidden = await user.post(
            "/topics/orders/bindings", json={"queue": "theirs", "pattern": "a"}
        )
        assert hidden.status_code == 404
        assert (await _publish(user, "orders", "x")).status_code == 403


async def test_topics_and_bindings_survive_a_restart(
    client: httpx.AsyncClient, server: BrokerServer
) -> None:
    """After a restart the topic still routes by its bindings."""
    await _queue(client, "q")
    await _topic(client, "t", q=["a.#"])
    await server.restart()
    token = (
        await client.post(
            "/auth/token", json={"username": "admin", "password": server.settings.admin_password}
        )
    ).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    response = await _publish(client, "t", "a.b.c")
    assert [r["queue"] for r in response.json()["routed"]] == ["q"]


async def test_confirmed_topic_publish_and_bindings_survive_kill_9(
    server_process_factory: Any,
) -> None:
    """After kill -9, every confirmed copy is in its queue and the bindings still route."""
    from tests.conftest import login

    process = server_process_factory()
    await process.start()
    token = (await login(process.url))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=process.url, headers=headers, timeout=10) as http:
        await _queue(http, "a")
        await _queue(http, "b")
        await _topic(http, "t", a=["k.*"], b=["#"])
        confirmed = [await _publish(http, "t", f"k.{n}", n) for n in range(20)]
        assert all(len(r.json()["routed"]) == 2 for r in confirmed)
    process.kill()
    await process.start()
    token = (await login(process.url))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=process.url, headers=headers, timeout=10) as http:
        assert await _pending(http, "a") == 20
        assert await _pending(http, "b") == 20
        again = await _publish(http, "t", "k.x")
        assert sorted(r["queue"] for r in again.json()["routed"]) == ["a", "b"]

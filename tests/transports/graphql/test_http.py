"""GraphQL over HTTP on a real server: queries, mutations, permissions, errors and limits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import login

if TYPE_CHECKING:
    from tests.conftest import BrokerServer


async def graphql(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    """POST a GraphQL operation; return the whole response body."""
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def data_of(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    """Run an operation that must succeed; return its ``data``."""
    body = await graphql(client, query, **variables)
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def error_of(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    """Run an operation that must fail with one error; return it."""
    body = await graphql(client, query, **variables)
    [error] = body["errors"]
    assert error["message"], error
    result: dict[str, Any] = error
    return result


async def make_queue(client: httpx.AsyncClient, name: str = "jobs") -> None:
    await data_of(
        client, "mutation($name: String!) { createQueue(name: $name) { name } }", name=name
    )


PUBLISH = """
mutation($queue: String!, $content: JSON!, $headers: JSON) {
  publish(queue: $queue, content: $content, headers: $headers) { messageId queue status }
}
"""


async def publish(client: httpx.AsyncClient, content: object, queue: str = "jobs") -> int:
    data = await data_of(client, PUBLISH, queue=queue, content=content)
    return int(data["publish"]["messageId"])


async def consume_rest(client: httpx.AsyncClient, count: int = 1) -> list[int]:
    response = await client.get("/queues/jobs/messages/consume", params={"max": count})
    assert response.status_code == 200, response.text
    return [m["message_id"] for m in response.json()["messages"]]


@pytest.fixture
async def alice(server: BrokerServer, client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client of user ``alice``, who may only consume ``jobs``."""
    response = await client.post(
        "/users",
        json={
            "username": "alice",
            "password": "alice-password",
            "permissions": [{"pattern": "jobs", "actions": ["consume"]}],
        },
    )
    assert response.status_code == 201, response.text
    token = (await login(server.url, "alice", "alice-password"))["access_token"]
    return httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def test_create_queue_answers_it_in_camel_case(client: httpx.AsyncClient) -> None:
    """createQueue answers the queue with REST's fields, camelCased."""
    data = await data_of(
        client,
        'mutation { createQueue(name: "jobs", options: {maxAttempts: 3, overflow: drop_head})'
        " { name maxAttempts overflow lease createdAt pending processing consumers } }",
    )
    queue = data["createQueue"]
    assert queue["name"] == "jobs"
    assert (queue["maxAttempts"], queue["overflow"], queue["lease"]) == (3, "drop_head", 30.0)
    assert (queue["pending"], queue["processing"], queue["consumers"]) == (0, 0, 0)
    assert queue["createdAt"]


async def test_queues_and_queue_list_and_read(client: httpx.AsyncClient) -> None:
    """queues lists every queue and queue(name) reads one, with its counts."""
    await make_queue(client, "jobs")
    await make_queue(client, "mail")
    await publish(client, 1, "mail")
    data = await data_of(client, '{ queues { name } queue(name: "mail") { name pending } }')
    assert [q["name"] for q in data["queues"]] == ["jobs", "mail"]
    assert data["queue"] == {"name": "mail", "pending": 1}


async def test_create_existing_queue_is_an_error_with_a_code(client: httpx.AsyncClient) -> None:
    """Creating a queue twice is a GraphQL error whose code is REST's."""
    await make_queue(client)
    error = await error_of(client, 'mutation { createQueue(name: "jobs") { name } }')
    assert error["extensions"]["code"] == "queue_exists"
    assert "jobs" in error["message"]


async def test_missing_queue_is_an_error_with_a_code(client: httpx.AsyncClient) -> None:
    """Reading a queue that doesn't exist answers queue_not_found."""
    error = await error_of(client, '{ queue(name: "nope") { name } }')
    assert error["extensions"]["code"] == "queue_not_found"


async def test_invalid_option_is_refused_as_invalid(client: httpx.AsyncClient) -> None:
    """Options are validated by the same Struct as REST's body."""
    error = await error_of(
        client, 'mutation { createQueue(name: "jobs", options: {maxAttempts: 0}) { name } }'
    )
    assert error["extensions"]["code"] == "invalid"


async def test_publish_then_browse_shows_json_content(client: httpx.AsyncClient) -> None:
    """A published JSON value and headers come back as JSON when browsing."""
    await make_queue(client)
    data = await data_of(
        client, PUBLISH, queue="jobs", content={"order": [7, "x"]}, headers={"k": "v"}
    )
    assert data["publish"]["status"] == "pending"
    page = await data_of(
        client,
        '{ messages(queue: "jobs", status: "pending") '
        "{ messages { messageId status content headers attempt } nextCursor } }",
    )
    [message] = page["messages"]["messages"]
    assert message == {
        "messageId": data["publish"]["messageId"],
        "status": "pending",
        "content": {"order": [7, "x"]},
        "headers": {"k": "v"},
        "attempt": 0,
    }
    assert page["messages"]["nextCursor"] is None


async def test_browse_pages_with_after(client: httpx.AsyncClient) -> None:
    """messages pages by ascending id: nextCursor given as after yields the next page."""
    await make_queue(client)
    ids = [await publish(client, n) for n in range(3)]
    query = 'query($after: Long) { messages(queue: "jobs", limit: 2, after: $after) '
    query += "{ messages { messageId } nextCursor } }"
    first = (await data_of(client, query))["messages"]
    second = (await data_of(client, query, after=first["nextCursor"]))["messages"]
    assert [m["messageId"] for m in first["messages"]] == ids[:2]
    assert [m["messageId"] for m in second["messages"]] == ids[2:]


async def test_publish_batch_answers_in_order(client: httpx.AsyncClient) -> None:
    """publishBatch publishes every message and answers them in request order."""
    await make_queue(client)
    data = await data_of(
        client,
        "mutation($messages: [PublishInput!]!) "
        '{ publishBatch(queue: "jobs", messages: $messages) { messageId } }',
        messages=[{"content": "a"}, {"content": {"b": 2}, "priority": 9}],
    )
    ids = [r["messageId"] for r in data["publishBatch"]]
    assert ids == sorted(ids) and len(ids) == 2
    info = (await client.get("/queues/jobs")).json()
    assert info["pending"] == 2


async def test_oversize_content_is_refused(server: BrokerServer, client: httpx.AsyncClient) -> None:
    """A message larger than max_message_bytes is refused as too large, as over REST."""
    await make_queue(client)
    big = "x" * (server.settings.max_message_bytes + 1)
    body = await graphql(client, PUBLISH, queue="jobs", content=big)
    assert body["errors"][0]["extensions"]["code"] == "too_large"


async def test_ack_settles_a_consumed_message(client: httpx.AsyncClient) -> None:
    """ack marks a leased message processed."""
    await make_queue(client)
    await publish(client, 1)
    [message_id] = await consume_rest(client)
    data = await data_of(
        client, "mutation($id: Long!) { ack(messageId: $id) { messageId status } }", id=message_id
    )
    assert data["ack"] == {"messageId": message_id, "status": "processed"}
    assert (await client.get("/queues/jobs")).json()["processed"] == 1


async def test_ack_of_a_message_not_processing_is_refused(client: httpx.AsyncClient) -> None:
    """Acking an id that is not in flight answers invalid_transition."""
    error = await error_of(client, "mutation { ack(messageId: 12345) { status } }")
    assert error["extensions"]["code"] == "invalid_transition"


async def test_nack_requeues_as_redelivered(client: httpx.AsyncClient) -> None:
    """nack with requeue puts the message back; its next delivery is marked redelivered."""
    await make_queue(client)
    await publish(client, 1)
    [message_id] = await consume_rest(client)
    data = await data_of(
        client, "mutation($id: Long!) { nack(messageId: $id) { status } }", id=message_id
    )
    assert data["nack"]["status"] == "pending"
    response = await client.get("/queues/jobs/messages/consume")
    [message] = response.json()["messages"]
    assert (message["message_id"], message["attempt"], message["redelivered"]) == (
        message_id,
        2,
        True,
    )


async def test_ack_many_reports_what_it_could_not_settle(client: httpx.AsyncClient) -> None:
    """ackMany settles the leased ids and says why the others were not."""
    await make_queue(client)
    for n in range(2):
        await publish(client, n)
    ids = await consume_rest(client, 2)
    data = await data_of(
        client,
        "mutation($ids: [Long!]!) { ackMany(ids: $ids) { settled errors } }",
        ids=[*ids, 999_999],
    )
    assert sorted(data["ackMany"]["settled"]) == sorted(ids)
    assert list(data["ackMany"]["errors"]) == ["999999"]


async def test_nack_many_without_requeue_fails_messages(client: httpx.AsyncClient) -> None:
    """nackMany with requeue false fails every leased id."""
    await make_queue(client)
    for n in range(2):
        await publish(client, n)
    ids = await consume_rest(client, 2)
    data = await data_of(
        client,
        "mutation($ids: [Long!]!) { nackMany(ids: $ids, requeue: false) { settled errors } }",
        ids=ids,
    )
    assert sorted(data["nackMany"]["settled"]) == sorted(ids)
    assert (await client.get("/queues/jobs")).json()["failed"] == 2


async def test_purge_and_delete_queue(client: httpx.AsyncClient) -> None:
    """purgeQueue deletes pending messages; deleteQueue deletes the queue."""
    await make_queue(client)
    await publish(client, 1)
    data = await data_of(client, 'mutation { purgeQueue(name: "jobs") { purged } }')
    assert data["purgeQueue"] == {"purged": 1}
    assert (await data_of(client, 'mutation { deleteQueue(name: "jobs") }'))["deleteQueue"]
    assert (await client.get("/queues/jobs")).status_code == 404


async def test_update_queue_changes_options(client: httpx.AsyncClient) -> None:
    """updateQueue changes only the options given."""
    await make_queue(client)
    data = await data_of(
        client, 'mutation { updateQueue(name: "jobs", options: {lease: 2.5}) { lease overflow } }'
    )
    assert data["updateQueue"] == {"lease": 2.5, "overflow": "reject_publish"}


async def test_queues_lists_only_visible_queues(
    client: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    """A user sees only the queues it has a permission on."""
    await make_queue(client, "jobs")
    await make_queue(client, "secret")
    async with alice:
        data = await data_of(alice, "{ queues { name } }")
    assert data["queues"] == [{"name": "jobs"}]


async def test_invisible_queue_answers_not_found(
    client: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    """A queue the user can't see answers like a missing one."""
    await make_queue(client, "secret")
    async with alice:
        error = await error_of(alice, '{ queue(name: "secret") { name } }')
    assert error["extensions"]["code"] == "queue_not_found"


async def test_publish_without_permission_is_forbidden(
    client: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    """Publishing needs the publish permission, as over REST."""
    await make_queue(client)
    async with alice:
        body = await graphql(alice, PUBLISH, queue="jobs", content=1)
    assert body["errors"][0]["extensions"]["code"] == "forbidden"


async def test_request_without_token_is_refused(server: BrokerServer) -> None:
    """An HTTP request without a bearer token is answered 401, as every REST route."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        response = await anonymous.post("/graphql", json={"query": "{ queues { name } }"})
    assert response.status_code == 401


async def test_stats_mirrors_rest_stats(client: httpx.AsyncClient) -> None:
    """The stats query answers the figures of GET /stats, camelCased."""
    await make_queue(client)
    await publish(client, 1)
    data = await data_of(
        client,
        "{ stats { queuesTotal messagesPending messagesTotal uptimeHuman "
        "system { pid } brokerSpecific { framework queues { name pending } } } }",
    )
    stats = data["stats"]
    rest = (await client.get("/stats")).json()
    assert (stats["queuesTotal"], stats["messagesPending"], stats["messagesTotal"]) == (1, 1, 1)
    assert stats["system"]["pid"] == rest["system"]["pid"]
    assert stats["brokerSpecific"]["framework"] == rest["broker_specific"]["framework"]
    assert stats["brokerSpecific"]["queues"] == [{"name": "jobs", "pending": 1}]


async def test_syntax_error_is_an_invalid_query(client: httpx.AsyncClient) -> None:
    """A document that doesn't parse answers invalid_query."""
    error = await error_of(client, "{ queues { name }")
    assert error["extensions"]["code"] == "invalid_query"


async def test_variable_of_the_wrong_type_is_an_invalid_query(client: httpx.AsyncClient) -> None:
    """A variable that doesn't fit its type is the client's error, not the server's."""
    error = await error_of(
        client, "mutation($id: Long!) { ack(messageId: $id) { status } }", id="x"
    )
    assert error["extensions"] == {"code": "invalid_query", "status": 400}


@pytest.mark.parametrize("settings_overrides", [{"graphql_max_depth": 1}])
async def test_too_deep_query_is_refused(client: httpx.AsyncClient) -> None:
    """An operation deeper than graphql_max_depth is refused before it runs."""
    await make_queue(client)
    error = await error_of(client, '{ messages(queue: "jobs") { messages { messageId } } }')
    assert error["extensions"]["code"] == "invalid_query"
    assert "depth" in error["message"]


@pytest.mark.parametrize("settings_overrides", [{"graphql_max_complexity": 20}])
async def test_too_complex_query_is_refused(client: httpx.AsyncClient) -> None:
    """Fields under a page count once per 100 rows of its limit, up to graphql_max_complexity."""
    await make_queue(client)
    query = 'query($n: Int!) { messages(queue: "jobs", limit: $n) { messages { messageId } } }'
    assert await data_of(client, query, n=100)
    error = await error_of(client, query, n=1000)
    assert error["extensions"]["code"] == "invalid_query"
    assert "complexity" in error["message"]


@pytest.mark.parametrize("settings_overrides", [{"graphql_max_complexity": 40}])
async def test_fragment_bomb_counts_at_full_size(client: httpx.AsyncClient) -> None:
    """Fragments are expanded when pricing, so nesting them can't hide their size (4 x 4 x 3)."""
    query = """
    query { ...A ...A ...A ...A }
    fragment A on Query { ...B ...B ...B ...B }
    fragment B on Query { queues { name pending } }
    """
    error = await error_of(client, query)
    assert "complexity" in error["message"]


async def test_document_over_the_token_limit_is_refused_before_validation(
    client: httpx.AsyncClient,
) -> None:
    """A 300-message publishBatch written inline (over 2,000 tokens) is refused, nothing stored."""
    await make_queue(client)
    messages = ", ".join(f'{{content: "m{n}", priority: 1}}' for n in range(300))
    error = await error_of(
        client,
        f'mutation {{ publishBatch(queue: "jobs", messages: [{messages}]) {{ messageId }} }}',
    )
    assert error["extensions"] == {"code": "too_many_tokens", "status": 400}
    assert "2000 tokens" in error["message"]
    assert (await client.get("/queues/jobs")).json()["pending"] == 0


@pytest.mark.parametrize("settings_overrides", [{"graphql_max_tokens": 20}])
async def test_token_limit_is_a_setting(client: httpx.AsyncClient) -> None:
    """graphql_max_tokens sets the limit: 20 tokens pass, 21 are refused."""
    fields = " ".join(["__typename"] * 18)
    assert await data_of(client, f"{{ {fields} }}")
    error = await error_of(client, f"{{ {fields} __typename }}")
    assert error["extensions"]["code"] == "too_many_tokens"


@pytest.mark.parametrize("settings_overrides", [{"graphql_introspection": False}])
async def test_introspection_can_be_turned_off(client: httpx.AsyncClient) -> None:
    """With graphql_introspection off, introspection queries are refused."""
    body = await graphql(client, "{ __schema { queryType { name } } }")
    assert body["data"] is None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"invalid_query"}


async def test_introspection_is_on_by_default(client: httpx.AsyncClient) -> None:
    """By default the schema can be introspected."""
    data = await data_of(client, "{ __schema { queryType { name } } }")
    assert data["__schema"]["queryType"]["name"] == "Query"


@pytest.mark.parametrize("settings_overrides", [{"dev": True}])
async def test_graphiql_is_served_in_development(server: BrokerServer) -> None:
    """In development mode a browser gets GraphiQL at GET /graphql, without a token."""
    async with httpx.AsyncClient(base_url=server.url) as browser:
        response = await browser.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


@pytest.mark.parametrize("settings_overrides", [{"dev": True}])
async def test_get_query_in_development_still_needs_a_token(server: BrokerServer) -> None:
    """GET is open for GraphiQL in development, but a query sent by GET is still refused."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        response = await anonymous.get("/graphql", params={"query": "{ queues { name } }"})
    assert response.json()["errors"][0]["extensions"]["code"] == "unauthorized"


async def test_graphiql_is_not_served_in_production(server: BrokerServer) -> None:
    """Outside development mode GET /graphql needs a token like every route."""
    async with httpx.AsyncClient(base_url=server.url) as browser:
        response = await browser.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 401


SCHEDULE = """
mutation($queue: String!, $schedule: ScheduleInput!) {
  createSchedule(queue: $queue, schedule: $schedule) {
    name cron everyMs timezone paused nextFireAt
  }
}
"""


async def test_schedules_are_created_listed_paused_and_deleted(client: httpx.AsyncClient) -> None:
    """The schedule mutations and queries answer as REST does."""
    await make_queue(client)
    schedule = {"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Riga",
                "content": {"job": "report"}, "headers": {"k": "v"}}  # fmt: skip
    created = (await data_of(client, SCHEDULE, queue="jobs", schedule=schedule))["createSchedule"]
    assert created["cron"] == "0 3 * * *" and created["everyMs"] is None
    assert created["paused"] is False
    # 03:00 in Riga: 01:00 UTC in winter, 00:00 UTC in summer.
    assert "T01:00:00" in created["nextFireAt"] or "T00:00:00" in created["nextFireAt"]
    paused = await data_of(
        client, 'mutation { pauseSchedule(queue: "jobs", name: "nightly") { paused } }'
    )
    assert paused["pauseSchedule"]["paused"] is True
    listed = await data_of(
        client, '{ schedules(queue: "jobs") { name paused content headers lastFiredAt } }'
    )
    assert listed["schedules"] == [
        {
            "name": "nightly",
            "paused": True,
            "content": {"job": "report"},
            "headers": {"k": "v"},
            "lastFiredAt": None,
        }
    ]
    resumed = await data_of(
        client, 'mutation { resumeSchedule(queue: "jobs", name: "nightly") { paused } }'
    )
    assert resumed["resumeSchedule"]["paused"] is False
    one = await data_of(client, '{ schedule(queue: "jobs", name: "nightly") { timezone } }')
    assert one["schedule"]["timezone"] == "Europe/Riga"
    deleted = await data_of(client, 'mutation { deleteSchedule(queue: "jobs", name: "nightly") }')
    assert deleted["deleteSchedule"] is True
    error = await error_of(client, '{ schedule(queue: "jobs", name: "nightly") { name } }')
    assert error["extensions"]["code"] == "schedule_not_found"


async def test_a_bad_schedule_is_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    """An invalid cron, a short period or an unknown zone: a 422 error naming the field."""
    await make_queue(client)
    for schedule, field in (
        ({"name": "s", "cron": "* * *", "content": 1}, "cron"),
        ({"name": "s", "everyMs": 10, "content": 1}, "everyMs"),
        ({"name": "s", "everyMs": 5000, "timezone": "Nowhere/Land", "content": 1}, "timezone"),
    ):
        error = await error_of(client, SCHEDULE, queue="jobs", schedule=schedule)
        assert error["extensions"]["status"] == 422, error
        assert field in error["message"], error


async def test_a_batch_body_is_a_json_error(client: httpx.AsyncClient) -> None:
    """A JSON array (a batch, not enabled) is a 400 in the broker's error format."""
    response = await client.post("/graphql", json=[{"query": "{ queues { name } }"}])
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_body"

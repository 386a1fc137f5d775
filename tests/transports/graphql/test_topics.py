"""Topics over GraphQL: createTopic, bindTopic, topics, routeTopic, publishTopic, errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.conftest import make_user
from tests.transports.graphql.test_http import data_of, error_of, make_queue

if TYPE_CHECKING:
    import httpx

    from tests.conftest import BrokerServer

CREATE = "mutation($name: String!) { createTopic(name: $name) { name bindings { queue } } }"
BIND = """
mutation($topic: String!, $queue: String!, $pattern: String!) {
  bindTopic(topic: $topic, queue: $queue, pattern: $pattern) { topic queue pattern createdAt }
}
"""
UNBIND = """
mutation($topic: String!, $queue: String!, $pattern: String!) {
  unbindTopic(topic: $topic, queue: $queue, pattern: $pattern)
}
"""
PUBLISH = """
mutation($topic: String!, $key: String!, $content: JSON!, $headers: JSON) {
  publishTopic(topic: $topic, routingKey: $key, content: $content, headers: $headers) {
    routingKey routed { queue messageId }
  }
}
"""
TOPICS = "{ topics { name createdAt bindings { queue pattern } } }"
ROUTE = """
query($topic: String!, $key: String!) { routeTopic(topic: $topic, routingKey: $key) { queues } }
"""


async def _setup(client: httpx.AsyncClient) -> None:
    await make_queue(client, "eu")
    await make_queue(client, "all")
    assert (await data_of(client, CREATE, name="orders"))["createTopic"]["bindings"] == []
    for queue, pattern in (("eu", "orders.eu.*"), ("all", "#"), ("eu", "*.eu.#")):
        bound = await data_of(client, BIND, topic="orders", queue=queue, pattern=pattern)
        assert bound["bindTopic"]["pattern"] == pattern


async def test_topics_query_and_publish_topic(client: httpx.AsyncClient) -> None:
    """Bindings show in `topics`; publishTopic routes to each matched queue once."""
    await _setup(client)
    [topic] = (await data_of(client, TOPICS))["topics"]
    assert topic["name"] == "orders"
    assert len(topic["bindings"]) == 3
    data = await data_of(
        client, PUBLISH, topic="orders", key="orders.eu.new", content={"a": 1}, headers={"h": "v"}
    )
    routed = data["publishTopic"]["routed"]
    assert sorted(r["queue"] for r in routed) == ["all", "eu"]
    [message] = (await client.get("/queues/eu/messages/consume")).json()["messages"]
    assert message["content"] == {"a": 1}
    assert message["headers"] == {"h": "v"}
    assert message["message_id"] == next(r["messageId"] for r in routed if r["queue"] == "eu")


async def test_route_topic_and_unbind(client: httpx.AsyncClient) -> None:
    """routeTopic shows the queues a key reaches; after unbindTopic it no longer does."""
    await _setup(client)
    route = await data_of(client, ROUTE, topic="orders", key="x.eu.y")
    assert route["routeTopic"]["queues"] == ["all", "eu"]
    assert (await data_of(client, UNBIND, topic="orders", queue="eu", pattern="*.eu.#"))[
        "unbindTopic"
    ]
    route = await data_of(client, ROUTE, topic="orders", key="x.eu.y")
    assert route["routeTopic"]["queues"] == ["all"]
    deleted = await data_of(client, 'mutation { deleteTopic(name: "orders") }')
    assert deleted["deleteTopic"] is True
    assert (await data_of(client, TOPICS))["topics"] == []


async def test_graphql_topic_errors_carry_codes(client: httpx.AsyncClient) -> None:
    """Bad keys and patterns, unknown topics and queues answer with the REST codes."""
    await _setup(client)
    error = await error_of(client, PUBLISH, topic="orders", key="a.#", content=1)
    assert error["extensions"]["code"] == "invalid"
    error = await error_of(client, PUBLISH, topic="nope", key="a", content=1)
    assert error["extensions"]["code"] == "topic_not_found"
    error = await error_of(client, BIND, topic="orders", queue="nope", pattern="a")
    assert error["extensions"]["code"] == "queue_not_found"
    error = await error_of(client, BIND, topic="orders", queue="eu", pattern="a..b")
    assert error["extensions"]["code"] == "invalid"
    error = await error_of(client, CREATE, name="orders")
    assert error["extensions"]["code"] == "topic_exists"
    error = await error_of(client, CREATE, name="no spaces")
    assert error["extensions"]["status"] == 422


async def test_publish_topic_needs_publish_on_the_topic(
    client: httpx.AsyncClient, server: BrokerServer
) -> None:
    """Without publish on the topic name, publishTopic is forbidden."""
    await _setup(client)
    token = await make_user(client, server, "u", [{"pattern": "orders", "actions": ["manage"]}])
    client.headers["Authorization"] = f"Bearer {token}"
    error = await error_of(client, PUBLISH, topic="orders", key="a", content=1)
    assert error["extensions"]["code"] == "forbidden"

"""Message groups over GraphQL: groupConcurrency and singleActiveConsumer options, publish with
a group (single and batch), Message.group, a group name too long."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.transports.graphql.test_http import data_of, error_of

if TYPE_CHECKING:
    import httpx

CREATE = """
mutation($options: QueueOptionsInput) {
  createQueue(name: "jobs", options: $options) { groupConcurrency singleActiveConsumer }
}
"""
PUBLISH = """
mutation($group: String) { publish(queue: "jobs", content: 1, group: $group) { messageId } }
"""


async def test_groups_over_graphql(client: httpx.AsyncClient) -> None:
    """Options in and out; publish and publishBatch keep the group (as REST shows it)."""
    options = {"groupConcurrency": 2, "singleActiveConsumer": True}
    data = await data_of(client, CREATE, options=options)
    assert data["createQueue"] == options
    first = (await data_of(client, PUBLISH, group="order-7"))["publish"]["messageId"]
    batch = """
    mutation { publishBatch(queue: "jobs", messages: [{content: 2, group: "order-8"}]) {
      messageId } }
    """
    second = (await data_of(client, batch))["publishBatch"][0]["messageId"]
    for id, group in ((first, "order-7"), (second, "order-8")):
        response = await client.get(f"/queues/jobs/messages/{id}")
        assert response.json()["group"] == group
    error = await error_of(client, PUBLISH, group="g" * 129)
    assert "group" in error["message"], error
    error = await error_of(client, CREATE, options={"groupConcurrency": 0})
    assert "group_concurrency" in error["message"] or "groupConcurrency" in error["message"]

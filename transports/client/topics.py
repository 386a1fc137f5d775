"""`TopicMethods`: the client's calls of the topic routes (REST), mixed into `RestClient`.

Example::

    await client.create_topic("orders")
    await client.bind("orders", "eu-orders", "orders.eu.#")
    result = await client.publish_topic("orders", "orders.eu.created", {"id": 7})
    print([(r.queue, r.message_id) for r in result.routed])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from broker_core.topic_messages import BindingInfo, TopicInfo, TopicPublishResult

if TYPE_CHECKING:
    import httpx

__all__ = ["TopicMethods"]

_topic_decoder = msgspec.json.Decoder(TopicInfo)
_topics_decoder = msgspec.json.Decoder(list[TopicInfo])
_binding_decoder = msgspec.json.Decoder(BindingInfo)
_published_decoder = msgspec.json.Decoder(TopicPublishResult)


class _Route(msgspec.Struct):
    queues: list[str]


_route_decoder = msgspec.json.Decoder(_Route)


class TopicMethods:
    """Topics, bindings and publishing by routing key (``/topics``), over REST."""

    if TYPE_CHECKING:

        async def request(
            self,
            method: str,
            path: str,
            *,
            json: Any = None,
            params: dict[str, Any] | None = None,
        ) -> httpx.Response:
            """`RestClient.request`."""
            ...

    async def topics(self) -> list[TopicInfo]:
        """Every topic the user may see, with its bindings (``GET /topics``)."""
        return _topics_decoder.decode((await self.request("GET", "/topics")).content)

    async def topic(self, name: str) -> TopicInfo:
        """One topic and its bindings."""
        return _topic_decoder.decode((await self.request("GET", f"/topics/{name}")).content)

    async def create_topic(self, name: str) -> TopicInfo:
        """Create a topic (``POST /topics``; `RequestError` 409 if it exists)."""
        response = await self.request("POST", "/topics", json={"name": name})
        return _topic_decoder.decode(response.content)

    async def delete_topic(self, name: str) -> None:
        """Delete a topic and its bindings (its queues stay)."""
        await self.request("DELETE", f"/topics/{name}")

    async def bind(self, topic: str, queue: str, pattern: str) -> BindingInfo:
        """Bind ``queue`` to ``topic``: keys matching ``pattern`` (``*`` one word, ``#`` any)."""
        response = await self.request(
            "POST", f"/topics/{topic}/bindings", json={"queue": queue, "pattern": pattern}
        )
        return _binding_decoder.decode(response.content)

    async def unbind(self, topic: str, queue: str, pattern: str) -> None:
        """Remove one binding (`RequestError` 404 ``binding_not_found`` if there is none)."""
        await self.request(
            "DELETE", f"/topics/{topic}/bindings", json={"queue": queue, "pattern": pattern}
        )

    async def route(self, topic: str, routing_key: str) -> list[str]:
        """The queues a publish with ``routing_key`` would reach now (publishes nothing)."""
        response = await self.request(
            "GET", f"/topics/{topic}/route", params={"routing_key": routing_key}
        )
        return _route_decoder.decode(response.content).queues

    async def publish_topic(
        self, topic: str, routing_key: str, content: Any, **options: Any
    ) -> TopicPublishResult:
        """Publish once to every queue bound by a matching pattern, committed atomically.

        ``options`` are the per-message fields (``headers``, ``priority``,
        ``delay_ms``, ``ttl_ms``, ``dedup_id``, ``group``). Returns once committed.
        """
        response = await self.request(
            "POST",
            f"/topics/{topic}/publish",
            json={"routing_key": routing_key, "content": content, **options},
        )
        return _published_decoder.decode(response.content)

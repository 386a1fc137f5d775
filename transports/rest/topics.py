"""REST routes of topics: create, list, delete, bind, unbind, test a routing key, publish.

The rules (permissions, matching, atomic routing) are `broker_core.topic_registry`'s;
these handlers decode, check sizes as every publish route does
(`transports.operations`), and answer.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from broker_core.topic_messages import (
    BindingInfo,
    BindingRequest,
    CreateTopicRequest,
    RouteResult,
    TopicInfo,
    TopicPublishRequest,
    TopicPublishResult,
)

from .. import operations
from ..context import ctx_of
from ..security import user_of
from .bodies import JsonBody

__all__ = ["TopicController"]

_create_body = JsonBody(CreateTopicRequest)
_binding_body = JsonBody(BindingRequest)
_publish_body = JsonBody(TopicPublishRequest)

Name = Annotated[str, PathParameter(description="The topic's name.", max_length=200)]


class TopicController(Controller):
    """``/topics``: topics, their bindings, and publishing by routing key."""

    path = "/topics"
    tags = ["topics"]

    @get("/", opt={"rate_limit": "default"})
    async def list_topics(self, request: Request[Any, Any, Any]) -> list[TopicInfo]:
        """Every topic the caller has a permission on, with the bindings it may see."""
        return await ctx_of(request).topics.all(user_of(request))

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        opt={"rate_limit": "admin"},
        operation_class=_create_body.operation,
    )
    async def create_topic(self, request: Request[Any, Any, Any]) -> TopicInfo:
        """Create a topic (``manage`` on its name); 409 if it exists."""
        ctx = ctx_of(request)
        data = await _create_body.read(
            request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth
        )
        return await ctx.topics.create(data.name, user_of(request))

    @get("/{name:str}", opt={"rate_limit": "default"})
    async def get_topic(self, request: Request[Any, Any, Any], name: Name) -> TopicInfo:
        """One topic and its bindings."""
        return await ctx_of(request).topics.get(name, user_of(request))

    @delete("/{name:str}", status_code=HTTP_204_NO_CONTENT, opt={"rate_limit": "admin"})
    async def delete_topic(self, request: Request[Any, Any, Any], name: Name) -> None:
        """Delete a topic and its bindings (``manage``); the queues stay."""
        await ctx_of(request).topics.delete(name, user_of(request))

    @post(
        "/{name:str}/bindings",
        status_code=HTTP_201_CREATED,
        opt={"rate_limit": "admin"},
        operation_class=_binding_body.operation,
    )
    async def bind(self, request: Request[Any, Any, Any], name: Name) -> BindingInfo:
        """Bind a queue by a pattern (``manage`` on topic and queue); 404 for an unknown queue."""
        ctx = ctx_of(request)
        data = await _binding_body.read(
            request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth
        )
        return await ctx.topics.bind(name, data.queue, data.pattern, user_of(request))

    @delete(
        "/{name:str}/bindings",
        status_code=HTTP_204_NO_CONTENT,
        opt={"rate_limit": "admin"},
        operation_class=_binding_body.operation,
    )
    async def unbind(self, request: Request[Any, Any, Any], name: Name) -> None:
        """Remove a binding (``manage`` on topic and queue); 404 ``binding_not_found``."""
        ctx = ctx_of(request)
        data = await _binding_body.read(
            request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth
        )
        await ctx.topics.unbind(name, data.queue, data.pattern, user_of(request))

    @get("/{name:str}/route", opt={"rate_limit": "default"})
    async def route(
        self,
        request: Request[Any, Any, Any],
        name: Name,
        routing_key: Annotated[
            str,
            QueryParameter(description="The key to test (empty: zero words).", max_length=255),
        ] = "",
    ) -> RouteResult:
        """Which queues a publish with ``routing_key`` would reach now (publishes nothing)."""
        queues = await ctx_of(request).topics.route(name, routing_key, user_of(request))
        return RouteResult(topic=name, routing_key=routing_key, queues=queues)

    @post(
        "/{name:str}/publish",
        status_code=HTTP_201_CREATED,
        opt={"rate_limit": "publish"},
        operation_class=_publish_body.operation,
    )
    async def publish(self, request: Request[Any, Any, Any], name: Name) -> TopicPublishResult:
        """Publish once to every queue bound by a matching pattern, committed atomically."""
        ctx = ctx_of(request)
        data = await _publish_body.read(
            request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth
        )
        operations.check_messages(ctx.settings, [data])
        return await ctx.topics.publish(name, data, user_of(request))

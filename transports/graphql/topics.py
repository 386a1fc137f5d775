"""GraphQL fields of topics: the ``topics``/``topic``/``routeTopic`` queries and their mutations.

`TopicQuery` and `TopicMutation` are merged into the ``Query`` and
``Mutation`` roots (`transports.graphql.schema`). Each resolver calls the same
`broker_core.topic_registry.Topics` method as the REST route, with the same
Structs, so permissions, validation and answers agree.
"""

from __future__ import annotations

# Strawberry reads the resolvers' argument annotations at runtime.
from datetime import datetime  # noqa: TC003

import strawberry
from strawberry.scalars import JSON  # noqa: TC002 - Strawberry reads annotations at runtime

from broker_core.auth import Action
from broker_core.topic_messages import (
    BindingInfo,
    BindingRequest,
    RouteResult,
    TopicInfo,
    TopicPublishRequest,
    TopicPublishResult,
)
from broker_core.topic_registry import require_topic

from .. import operations
from .context import context_of
from .structs import Long, object_type, publish_struct, to_struct

__all__ = ["Binding", "Topic", "TopicMutation", "TopicQuery"]

Binding = object_type(
    BindingInfo,
    name="Binding",
    description="A binding: messages whose routing key matches `pattern` go to `queue`.",
)
Topic = object_type(
    TopicInfo,
    name="Topic",
    description="A topic and its bindings (those on queues you can see).",
)
TopicPublished = object_type(
    TopicPublishResult,
    name="TopicPublishResult",
    description="A confirmed topic publish: each queue it reached once, with its message id.",
)
Route = object_type(
    RouteResult,
    name="TopicRoute",
    description="The queues a routing key would reach now (nothing is published).",
)


@strawberry.type(description="Read topics and test their routing.")
class TopicQuery:
    @strawberry.field(graphql_type=list[Topic], description="Topics you have a permission on.")
    async def topics(self, info: strawberry.Info) -> list[TopicInfo]:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.default)
        return await context.ctx.topics.all(user)

    @strawberry.field(graphql_type=Topic, description="One topic and its bindings.")
    async def topic(self, info: strawberry.Info, name: str) -> TopicInfo:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.default)
        return await context.ctx.topics.get(name, user)

    @strawberry.field(
        graphql_type=Route, description="Which queues a publish with `routingKey` would reach."
    )
    async def route_topic(self, info: strawberry.Info, topic: str, routing_key: str) -> RouteResult:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.default)
        queues = await context.ctx.topics.route(topic, routing_key, user)
        return RouteResult(topic=topic, routing_key=routing_key, queues=queues)


@strawberry.type(description="Manage topics and publish by routing key.")
class TopicMutation:
    @strawberry.mutation(graphql_type=Topic, description="Create a topic (`manage`).")
    async def create_topic(self, info: strawberry.Info, name: str) -> TopicInfo:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.admin)
        return await context.ctx.topics.create(name, user)

    @strawberry.mutation(description="Delete a topic and its bindings (`manage`); true when done.")
    async def delete_topic(self, info: strawberry.Info, name: str) -> bool:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.admin)
        await context.ctx.topics.delete(name, user)
        return True

    @strawberry.mutation(
        graphql_type=Binding, description="Bind a queue by a pattern (`manage` on both)."
    )
    async def bind_topic(
        self, info: strawberry.Info, topic: str, queue: str, pattern: str
    ) -> BindingInfo:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.admin)
        request = to_struct(None, BindingRequest, queue=queue, pattern=pattern)
        return await context.ctx.topics.bind(topic, request.queue, request.pattern, user)

    @strawberry.mutation(description="Remove a binding (`manage` on both); true when done.")
    async def unbind_topic(
        self, info: strawberry.Info, topic: str, queue: str, pattern: str
    ) -> bool:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.admin)
        request = to_struct(None, BindingRequest, queue=queue, pattern=pattern)
        await context.ctx.topics.unbind(topic, request.queue, request.pattern, user)
        return True

    @strawberry.mutation(
        graphql_type=TopicPublished,
        description=(
            "Publish once to every queue bound by a matching pattern (`publish` on the topic), "
            "committed atomically."
        ),
    )
    async def publish_topic(
        self,
        info: strawberry.Info,
        topic: str,
        routing_key: str,
        content: JSON,
        headers: JSON | None = None,
        priority: int | None = None,
        delay_ms: Long | None = None,
        deliver_at: datetime | None = None,
        ttl_ms: Long | None = None,
        dedup_id: str | None = None,
        group: str | None = None,
    ) -> TopicPublishResult:
        context = context_of(info)
        user = context.caller()
        require_topic(user, Action.PUBLISH, topic)
        context.spend(context.ctx.limits.publish)
        request = publish_struct(
            TopicPublishRequest,
            content,
            routing_key=routing_key,
            headers=headers,
            priority=priority,
            delay_ms=delay_ms,
            deliver_at=deliver_at,
            ttl_ms=ttl_ms,
            dedup_id=dedup_id,
            group=group,
        )
        operations.check_messages(context.ctx.settings, [request])
        return await context.ctx.topics.publish(topic, request, user)

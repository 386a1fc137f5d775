"""The GraphQL ``Mutation`` root: manage queues, publish, and settle delivered messages.

Each resolver checks what the matching REST route checks and calls the same
`transports.operations` rule or `Broker` method with the same Struct
(``PublishRequest``, ``CreateQueueRequest``, ...), so validation, limits and
answers agree with REST. ``ack`` and ``nack``
act on an in-flight message by id, whoever holds it: a message delivered to a
``messages`` subscription is settled this way.
"""

from __future__ import annotations

# Strawberry reads the resolvers' argument annotations at runtime.
from datetime import datetime  # noqa: TC003
from typing import TYPE_CHECKING

import msgspec
import strawberry
from strawberry.scalars import JSON  # noqa: TC002

from broker_core.auth import Action
from broker_core.messages import (
    AckRequest,
    CreateQueueRequest,
    NackRequest,
    PublishRequest,
    PurgeResponse,
    SettledResponse,
    UpdateQueueRequest,
)
from broker_core.permissions import require, require_admin
from broker_core.service_tokens import (
    CreatedServiceToken,
    CreateServiceTokenRequest,
    invalid_expiry,
)

from .. import operations
from ..errors import ApiError
from ..rest.results import ack_result
from .context import GraphQLContext, context_of
from .retries import RetryMutation
from .schedules import ScheduleMutations
from .structs import Long, publish_struct, to_struct
from .types import (
    CreatedToken,
    PublishInput,
    PublishResult,
    PurgeResult,
    Queue,
    QueueOptionsInput,
    QueueUpdateInput,
    SettledMessage,
    SettleResult,
)
from .webhooks import WebhookMutation

if TYPE_CHECKING:
    from broker_core.messages import (
        PublishResult as PublishResultStruct,
        QueueInfo,
        SettleResult as SettleResultStruct,
    )

__all__ = ["Mutation"]


@strawberry.type(description="Manage queues, publish messages and settle deliveries.")
class Mutation(RetryMutation, ScheduleMutations, WebhookMutation):
    @strawberry.mutation(graphql_type=Queue, description="Create a queue (`manage`).")
    async def create_queue(
        self,
        info: strawberry.Info,
        name: str,
        options: QueueOptionsInput | None = None,
    ) -> QueueInfo:
        context = context_of(info)
        require(context.caller(), Action.MANAGE, name)
        context.spend(context.ctx.limits.admin)
        request = to_struct(options, CreateQueueRequest, name=name)
        return await context.ctx.broker.create_queue(request)

    @strawberry.mutation(graphql_type=Queue, description="Change a queue's options (`manage`).")
    async def update_queue(
        self, info: strawberry.Info, name: str, options: QueueUpdateInput
    ) -> QueueInfo:
        context = context_of(info)
        require(context.caller(), Action.MANAGE, name)
        context.spend(context.ctx.limits.admin)
        request = to_struct(options, UpdateQueueRequest)
        operations.check_update(context.ctx.broker.clock(), request)
        return await context.ctx.broker.update_queue(name, request)

    @strawberry.mutation(description="Delete a queue and its messages (`manage`); true when done.")
    async def delete_queue(self, info: strawberry.Info, name: str) -> bool:
        context = context_of(info)
        require(context.caller(), Action.MANAGE, name)
        context.spend(context.ctx.limits.admin)
        await context.ctx.broker.delete_queue(name)
        return True

    @strawberry.mutation(
        graphql_type=PurgeResult, description="Delete a queue's pending messages (`manage`)."
    )
    async def purge_queue(self, info: strawberry.Info, name: str) -> PurgeResponse:
        context = context_of(info)
        require(context.caller(), Action.MANAGE, name)
        context.spend(context.ctx.limits.admin)
        return PurgeResponse(purged=await context.ctx.broker.purge(name))

    @strawberry.mutation(
        graphql_type=PublishResult,
        description="Publish one message (`publish`); answered once it is committed.",
    )
    async def publish(
        self,
        info: strawberry.Info,
        queue: str,
        content: JSON,
        headers: JSON | None = None,
        priority: int | None = None,
        delay_ms: Long | None = None,
        deliver_at: datetime | None = None,
        ttl_ms: Long | None = None,
        dedup_id: str | None = None,
        group: str | None = None,
    ) -> PublishResultStruct:
        context = _publisher(info, queue)
        request = publish_struct(
            PublishRequest,
            content,
            headers=headers,
            priority=priority,
            delay_ms=delay_ms,
            deliver_at=deliver_at,
            ttl_ms=ttl_ms,
            dedup_id=dedup_id,
            group=group,
        )
        [result] = await operations.publish(context.ctx, queue, [request], "graphql")
        return result

    @strawberry.mutation(
        graphql_type=list[PublishResult],
        description="Publish several messages atomically (`publish`); answered in order.",
    )
    async def publish_batch(
        self, info: strawberry.Info, queue: str, messages: list[PublishInput]
    ) -> list[PublishResultStruct]:
        context = _publisher(info, queue)
        requests = [to_struct(message, PublishRequest) for message in messages]
        return await operations.publish(context.ctx, queue, requests, "graphql")

    @strawberry.mutation(
        graphql_type=SettledMessage, description="Acknowledge a delivered message: processed."
    )
    async def ack(
        self, info: strawberry.Info, message_id: Long, result: JSON | None = None
    ) -> SettledResponse:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.consume)
        kept = (
            None
            if result is None
            else ack_result(context.ctx.broker, msgspec.Raw(msgspec.json.encode(result)))
        )
        return await operations.ack_one(context.ctx, user, message_id, kept)

    @strawberry.mutation(
        graphql_type=SettledMessage,
        description="Give a delivered message back: requeued (redelivered) or failed.",
    )
    async def nack(
        self,
        info: strawberry.Info,
        message_id: Long,
        requeue: bool = True,
        reason: str | None = None,
        delay_ms: Long | None = None,
    ) -> SettledResponse:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.consume)
        request = to_struct(
            None,
            NackRequest,
            ids=[message_id],
            requeue=requeue,
            reason=reason,
            delay_ms=delay_ms,
        )
        return await operations.nack_one(
            context.ctx, user, message_id, request.requeue, request.reason, request.delay_ms
        )

    @strawberry.mutation(
        graphql_type=SettleResult,
        description="Acknowledge many delivered messages; `errors` says why any was not.",
    )
    async def ack_many(self, info: strawberry.Info, ids: list[Long]) -> SettleResultStruct:
        context = context_of(info)
        user = context.caller()
        operations.check_settle_count(context.ctx.settings, ids)
        context.spend(context.ctx.limits.consume)
        request = to_struct(None, AckRequest, ids=ids)
        return await operations.ack(context.ctx, user, request.ids)

    @strawberry.mutation(
        graphql_type=SettleResult,
        description="Give many delivered messages back; `errors` says why any was not.",
    )
    async def nack_many(
        self,
        info: strawberry.Info,
        ids: list[Long],
        requeue: bool = True,
        reason: str | None = None,
        delay_ms: Long | None = None,
    ) -> SettleResultStruct:
        context = context_of(info)
        user = context.caller()
        operations.check_settle_count(context.ctx.settings, ids)
        context.spend(context.ctx.limits.consume)
        request = to_struct(
            None, NackRequest, ids=ids, requeue=requeue, reason=reason, delay_ms=delay_ms
        )
        return await operations.nack(
            context.ctx, user, request.ids, request.requeue, request.reason, request.delay_ms
        )

    @strawberry.mutation(
        graphql_type=CreatedToken,
        description=(
            "Create a service token (admins), as `POST /tokens`; `token` is shown this once. "
            "Scopes: metrics:read, stats:read, publish:<pattern>, consume:<pattern>, "
            "manage:<pattern>."
        ),
    )
    async def create_service_token(
        self,
        info: strawberry.Info,
        name: str,
        scopes: list[str],
        expires_at: datetime | None = None,
    ) -> CreatedServiceToken:
        context = context_of(info)
        admin = context.caller()
        require_admin(admin, "manage service tokens")
        context.spend(context.ctx.limits.admin)
        request = to_struct(
            None, CreateServiceTokenRequest, name=name, scopes=scopes, expires_at=expires_at
        )
        invalid = invalid_expiry(request)
        if invalid is not None:
            raise ApiError(422, "invalid", invalid)
        record, token = await context.ctx.accounts.create_service_token(request, admin.username)
        return CreatedServiceToken.of_new(record, token)

    @strawberry.mutation(
        description="Revoke a service token at once (admins), as `DELETE /tokens/{id}`."
    )
    async def revoke_service_token(self, info: strawberry.Info, id: str) -> bool:
        context = context_of(info)
        require_admin(context.caller(), "manage service tokens")
        context.spend(context.ctx.limits.admin)
        if not await context.ctx.accounts.revoke_service_token(id):
            raise ApiError(404, "token_not_found", f"service token {id!r} does not exist")
        return True


def _publisher(info: strawberry.Info, queue: str) -> GraphQLContext:
    """The context of a publish, once the caller may publish to ``queue``."""
    context = context_of(info)
    require(context.caller(), Action.PUBLISH, queue)
    context.spend(context.ctx.limits.publish)
    return context

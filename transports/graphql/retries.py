"""GraphQL mutations that hold back or take back messages: cancel, reschedule, pause, resume.

Part of the ``Mutation`` root (it inherits `RetryMutation`); each resolver
checks ``manage`` as the REST route does and calls the same
`transports.operations` rule. A nack's ``delayMs`` is an argument of
``nack``/``nackMany`` in `mutations`.
"""

from __future__ import annotations

# Strawberry reads the resolvers' argument annotations at runtime.
from datetime import datetime  # noqa: TC003
from typing import TYPE_CHECKING

import strawberry

from broker_core.auth import Action
from broker_core.messages import RescheduleRequest
from broker_core.permissions import require

from .. import operations
from .context import GraphQLContext, context_of
from .structs import Long, to_struct
from .types import Message, Queue

if TYPE_CHECKING:
    from broker_core.messages import MessageView, QueueInfo

__all__ = ["RetryMutation"]


def _manager(info: strawberry.Info, queue: str) -> GraphQLContext:
    context = context_of(info)
    require(context.caller(), Action.MANAGE, queue)
    context.spend(context.ctx.limits.admin)
    return context


@strawberry.type
class RetryMutation:
    """Cancel and reschedule pending messages; pause and resume queues (`manage`)."""

    @strawberry.mutation(
        description="Cancel a pending, delayed or backing-off message (`manage`); true when done."
    )
    async def cancel_message(self, info: strawberry.Info, queue: str, message_id: Long) -> bool:
        context = _manager(info, queue)
        await operations.cancel(context.ctx, queue, message_id)
        return True

    @strawberry.mutation(
        graphql_type=Message,
        description=(
            "Reschedule a pending message (`manage`): `deliverAt` or `delayMs` from now, "
            "and/or `priority`."
        ),
    )
    async def reschedule_message(
        self,
        info: strawberry.Info,
        queue: str,
        message_id: Long,
        deliver_at: datetime | None = None,
        delay_ms: Long | None = None,
        priority: int | None = None,
    ) -> MessageView:
        context = _manager(info, queue)
        fields = {"deliver_at": deliver_at, "delay_ms": delay_ms, "priority": priority}
        request = to_struct(
            None, RescheduleRequest, **{k: v for k, v in fields.items() if v is not None}
        )
        return await operations.reschedule(context.ctx, queue, message_id, request)

    @strawberry.mutation(
        graphql_type=Queue,
        description="Hold a queue's deliveries, until `until` if given (`manage`).",
    )
    async def pause_queue(
        self, info: strawberry.Info, name: str, until: datetime | None = None
    ) -> QueueInfo:
        context = _manager(info, name)
        return await operations.pause(context.ctx, name, until)

    @strawberry.mutation(graphql_type=Queue, description="Resume a paused queue (`manage`).")
    async def resume_queue(self, info: strawberry.Info, name: str) -> QueueInfo:
        context = _manager(info, name)
        return await operations.resume(context.ctx, name)

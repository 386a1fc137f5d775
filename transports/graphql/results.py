"""GraphQL of results and histories: ``message(id) { result history }``, ``messageResult``.

``ack(messageId, result)`` is in `mutations`. Permissions are REST's: reading
needs ``consume`` or ``manage`` on the message's queue.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator  # noqa: TC003 - Strawberry reads it at runtime
from typing import TYPE_CHECKING, Any

import msgspec
import strawberry

from broker_core.messages import MessageResult

from ..rest.results import MAX_WAIT_S, history_events, message_result, readable
from .context import context_of
from .structs import Long, object_type

if TYPE_CHECKING:
    from ..context import BrokerContext

__all__ = ["MessageLifeStruct", "ResultsQuery", "ResultsSubscription"]


class MessageLifeStruct(MessageResult, kw_only=True, frozen=True):
    """A message's outcome and the story of its life (``history``: ``{at, event, ...}``)."""

    history: list[dict[str, Any]] = msgspec.field(default_factory=list)


MessageLife = object_type(
    MessageLifeStruct,
    name="MessageLife",
    description=(
        "A message's status, its ack's `result` (JSON), `lastError`, and `history`: every "
        "event of its life in order, each `{at, event, ...details}`."
    ),
)
MessageOutcome = object_type(
    MessageResult,
    name="MessageResult",
    description="A processed or failed message's outcome: `result` is the JSON its ack carried.",
)


async def _life(ctx: BrokerContext, id: int, user: Any) -> MessageLifeStruct:
    stored = await readable(ctx, user, id)
    view = await message_result(ctx, stored)
    events = history_events(await ctx.broker.results.history(id))
    return MessageLifeStruct(
        message_id=view.message_id,
        queue=view.queue,
        status=view.status,
        result=view.result,
        last_error=view.last_error,
        history=events,
    )


@strawberry.type
class ResultsQuery:
    """``message(id)``: a message's result and history."""

    @strawberry.field(
        graphql_type=MessageLife,
        description="A message by id with its result and history (`consume` or `manage`).",
    )
    async def message(self, info: strawberry.Info, id: Long) -> MessageLifeStruct:
        context = context_of(info)
        context.spend(context.ctx.limits.default)
        return await _life(context.ctx, id, context.caller())


@strawberry.type
class ResultsSubscription:
    """``messageResult(messageId)``: one event once the message is processed or failed."""

    @strawberry.subscription(
        graphql_type=MessageOutcome,
        description=(
            "The outcome of a message, sent once it is processed or failed (`consume` or "
            "`manage`); waits up to `timeoutS` seconds (at most 30), then ends without one."
        ),
    )
    async def message_result(
        self, info: strawberry.Info, message_id: Long, timeout_s: float = MAX_WAIT_S
    ) -> AsyncGenerator[MessageResult, None]:
        context = context_of(info)
        ctx = context.ctx
        await readable(ctx, context.caller(), message_id)
        done = await ctx.broker.results.wait(message_id, min(max(timeout_s, 0.0), MAX_WAIT_S))
        if done is not None:
            yield await message_result(ctx, done)

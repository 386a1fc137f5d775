"""REST routes that settle in-flight messages by id: ack, nack, touch (one or many)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.params import FromPath, JSONBody, QueryParameter

from broker_core.messages import (
    AckRequest,
    NackRequest,
    SettledResponse,
    SettleResult,
    TouchRequest,
    from_timestamp,
)
from broker_core.retry import MAX_DELAY_MS

from .. import operations
from ..context import ctx_of
from ..security import user_of
from .results import read_ack_result

__all__ = ["MessageController", "TouchResponse"]


class TouchResponse(msgspec.Struct, kw_only=True, frozen=True):
    """When the extended lease now ends."""

    message_id: FromPath[int]
    lease_expires_at: Any


class MessageController(Controller):
    """``/messages``: settle leased messages by id, whatever their queue."""

    path = "/messages"
    tags = ["messages"]
    opt = {"rate_limit": "consume"}

    @post("/{message_id:int}/ack", status_code=200)
    async def ack(
        self, request: Request[Any, Any, Any], message_id: FromPath[int]
    ) -> SettledResponse:
        """Acknowledge a leased message: it is processed (keeping an optional ``{result}``)."""
        ctx = ctx_of(request)
        result = await read_ack_result(request, ctx)
        return await operations.ack_one(ctx, user_of(request), message_id, result)

    @post("/{message_id:int}/nack", status_code=200)
    async def nack(
        self,
        request: Request[Any, Any, Any],
        message_id: FromPath[int],
        requeue: Annotated[bool, QueryParameter(description="Requeue (true) or fail it.")] = True,
        reason: Annotated[str | None, QueryParameter(max_length=1024)] = None,
        delay_ms: Annotated[
            int | None,
            QueryParameter(
                ge=0,
                le=MAX_DELAY_MS,
                description="Wait this long before it goes again (overrides the queue's retry).",
            ),
        ] = None,
    ) -> SettledResponse:
        """Give a leased message back: requeued (redelivered, after ``delay_ms`` or the queue's
        back-off) or failed / dead-lettered."""
        return await operations.nack_one(
            ctx_of(request), user_of(request), message_id, requeue, reason, delay_ms
        )

    @post("/{message_id:int}/touch", status_code=200)
    async def touch(
        self,
        request: Request[Any, Any, Any],
        message_id: FromPath[int],
        data: JSONBody[TouchRequest],
    ) -> TouchResponse:
        """Extend a held lease to ``lease`` seconds from now (SQS ChangeMessageVisibility)."""
        deadline = await operations.touch(ctx_of(request), user_of(request), message_id, data.lease)
        return TouchResponse(message_id=message_id, lease_expires_at=from_timestamp(deadline))

    @post("/ack", status_code=200)
    async def ack_many(
        self, request: Request[Any, Any, Any], data: JSONBody[AckRequest]
    ) -> SettleResult:
        """Acknowledge many leased messages; ``errors`` says why any was not."""
        ctx = ctx_of(request)
        operations.check_settle_count(ctx.settings, data.ids)
        return await operations.ack(ctx, user_of(request), data.ids)

    @post("/nack", status_code=200)
    async def nack_many(
        self, request: Request[Any, Any, Any], data: JSONBody[NackRequest]
    ) -> SettleResult:
        """Nack many leased messages."""
        ctx = ctx_of(request)
        operations.check_settle_count(ctx.settings, data.ids)
        return await operations.nack(
            ctx, user_of(request), data.ids, data.requeue, data.reason, data.delay_ms
        )

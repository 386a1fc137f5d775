"""REST routes that settle in-flight messages by id: ack, nack, touch (one or many)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.params import FromPath, JSONBody, QueryParameter

from broker_core.auth import Action, allowed
from broker_core.errors import InvalidTransition
from broker_core.messages import AckRequest, NackRequest, SettleResult, TouchRequest, from_timestamp

from ..errors import ApiError
from .common import ctx_of, user_of

__all__ = ["MessageController", "SettledResponse", "TouchResponse"]


class SettledResponse(msgspec.Struct, kw_only=True, frozen=True):
    """The one message an ack or nack settled."""

    message_id: FromPath[int]
    status: str


class TouchResponse(msgspec.Struct, kw_only=True, frozen=True):
    """When the extended lease now ends."""

    message_id: FromPath[int]
    lease_expires_at: Any


def _can_consume(request: Request[Any, Any, Any]) -> Any:
    user = user_of(request)
    return lambda queue: allowed(user, Action.CONSUME, queue)


def _check_batch(request: Request[Any, Any, Any], ids: list[int]) -> None:
    limit = ctx_of(request).settings.max_batch
    if len(ids) > limit:
        raise ApiError(413, "too_large", f"a batch settles at most {limit} messages")


def _one(result: SettleResult, message_id: int, operation: str) -> None:
    if message_id not in result.settled:
        # Unknown, foreign and not-processing ids answer alike: no probing.
        raise InvalidTransition(message_id, operation, "not processing")


class MessageController(Controller):
    """``/messages``: settle leased messages by id, whatever their queue."""

    path = "/messages"
    tags = ["messages"]
    opt = {"rate_limit": "consume"}

    @post("/{message_id:int}/ack", status_code=200)
    async def ack(
        self, request: Request[Any, Any, Any], message_id: FromPath[int]
    ) -> SettledResponse:
        """Acknowledge a leased message: it is processed."""
        broker = ctx_of(request).broker
        _one(await broker.ack([message_id], allowed=_can_consume(request)), message_id, "ack")
        return SettledResponse(message_id=message_id, status="processed")

    @post("/{message_id:int}/nack", status_code=200)
    async def nack(
        self,
        request: Request[Any, Any, Any],
        message_id: FromPath[int],
        requeue: Annotated[bool, QueryParameter(description="Requeue (true) or fail it.")] = True,
        reason: Annotated[str | None, QueryParameter(max_length=1024)] = None,
    ) -> SettledResponse:
        """Give a leased message back: requeued (redelivered) or failed / dead-lettered."""
        broker = ctx_of(request).broker
        result = await broker.nack(
            [message_id], requeue=requeue, reason=reason, allowed=_can_consume(request)
        )
        _one(result, message_id, "nack")
        return SettledResponse(message_id=message_id, status="pending" if requeue else "failed")

    @post("/{message_id:int}/touch", status_code=200)
    async def touch(
        self,
        request: Request[Any, Any, Any],
        message_id: FromPath[int],
        data: JSONBody[TouchRequest],
    ) -> TouchResponse:
        """Extend a held lease to ``lease`` seconds from now (SQS ChangeMessageVisibility)."""
        ctx = ctx_of(request)
        lease = min(data.lease, ctx.settings.max_lease_s)
        deadline = await ctx.broker.touch(message_id, lease, allowed=_can_consume(request))
        return TouchResponse(message_id=message_id, lease_expires_at=from_timestamp(deadline))

    @post("/ack", status_code=200)
    async def ack_many(
        self, request: Request[Any, Any, Any], data: JSONBody[AckRequest]
    ) -> SettleResult:
        """Acknowledge many leased messages; ``errors`` says why any was not."""
        _check_batch(request, data.ids)
        return await ctx_of(request).broker.ack(data.ids, allowed=_can_consume(request))

    @post("/nack", status_code=200)
    async def nack_many(
        self, request: Request[Any, Any, Any], data: JSONBody[NackRequest]
    ) -> SettleResult:
        """Nack many leased messages."""
        _check_batch(request, data.ids)
        return await ctx_of(request).broker.nack(
            data.ids, requeue=data.requeue, reason=data.reason, allowed=_can_consume(request)
        )

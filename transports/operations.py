"""The publish, subscribe and settle rules that REST, WebSocket and GraphQL all apply.

Each transport authenticates, checks permissions (`broker_core.permissions`),
spends its rate-limit token and decodes its input in its own way; then it
calls here, so that a message too large, a batch too long, a lease past the
cap or a settle of a message the caller may not consume is answered alike
whichever way it came (errors are mapped once, in `transports.errors`).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

from broker_core import retry_commands
from broker_core.errors import InvalidTransition
from broker_core.messages import PublishRequest, SettledResponse
from broker_core.permissions import may_consume
from broker_core.retry import MAX_DELAY_MS

from .errors import ApiError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import msgspec

    from broker_core.auth import User
    from broker_core.messages import (
        MessageView,
        PublishResult,
        QueueInfo,
        RescheduleRequest,
        SettleResult,
        UpdateQueueRequest,
    )
    from broker_core.settings import Settings

    from .context import BrokerContext

__all__ = [
    "ack",
    "ack_one",
    "cancel",
    "capped_lease",
    "check_content",
    "check_headers",
    "check_messages",
    "check_pause_until",
    "check_prefetch",
    "check_settle_count",
    "check_subscriptions",
    "check_update",
    "nack",
    "nack_one",
    "pause",
    "publish",
    "publish_fanout",
    "reschedule",
    "reschedule_at",
    "resume",
    "touch",
]

# -- publish ------------------------------------------------------------------------


def check_content(settings: Settings, content: bytes | msgspec.Raw) -> None:
    """Refuse a message body over ``max_message_bytes`` (413 ``too_large``)."""
    if len(content) > settings.max_message_bytes:
        raise ApiError(
            413, "too_large", f"message content exceeds {settings.max_message_bytes} bytes"
        )


def check_headers(settings: Settings, headers: Mapping[str, str] | None) -> None:
    """Refuse a message with more than ``max_headers`` headers (422 ``invalid``)."""
    if headers is not None and len(headers) > settings.max_headers:
        raise ApiError(422, "invalid", f"a message carries at most {settings.max_headers} headers")


def check_messages(settings: Settings, messages: Sequence[PublishRequest]) -> None:
    """Refuse an empty or too large batch (413), then any message `check_content` and
    `check_headers` refuse."""
    if not messages:
        raise ApiError(422, "invalid", "messages must hold at least one message")
    if len(messages) > settings.max_batch:
        raise ApiError(413, "too_large", f"a batch holds at most {settings.max_batch} messages")
    for message in messages:
        check_content(settings, message.content)
        check_headers(settings, message.headers)


async def publish(
    ctx: BrokerContext, queue: str, messages: list[PublishRequest], transport: str = "http"
) -> list[PublishResult]:
    """Publish ``messages`` to ``queue`` atomically, once they pass `check_messages`.

    The caller has checked the ``publish`` permission. Returns once they are
    committed, in order (with ``publish`` spans of the traced ones when spans are on).
    """
    check_messages(ctx.settings, messages)
    tracing = ctx.tracing
    if tracing is None:
        return await ctx.broker.publish(queue, messages)
    started = time.time_ns()
    results = await ctx.broker.publish(queue, messages)
    tracing.published(queue, messages, [r.message_id for r in results], started, transport)
    return results


async def publish_fanout(
    ctx: BrokerContext, queues: list[str], message: PublishRequest
) -> list[PublishResult]:
    """Publish one message to several queues, committed atomically (one result per queue).

    ``message`` may be a subclass (a ``POST /publish`` body); only the fields
    of `PublishRequest` are published.
    """
    check_messages(ctx.settings, [message])
    plain = PublishRequest(
        **{field: getattr(message, field) for field in PublishRequest.__struct_fields__}
    )
    return await ctx.broker.publish_fanout(queues, plain)


# -- subscribe ----------------------------------------------------------------------


def check_prefetch(settings: Settings, prefetch: int) -> None:
    """Refuse a push consumer's ``prefetch`` outside 1 to ``ws_send_buffer_messages`` (422).

    What a consumer holds is bounded like a connection's send buffer.
    """
    most = settings.ws_send_buffer_messages
    if not 1 <= prefetch <= most:
        raise ApiError(422, "invalid", f"prefetch must be between 1 and {most}")


def check_subscriptions(settings: Settings, count: int) -> None:
    """Refuse one more subscription on a connection that holds ``count`` (429)."""
    limit = settings.max_consumers_per_connection
    if count >= limit:
        raise ApiError(
            429, "too_many_subscriptions", f"a connection holds at most {limit} subscriptions"
        )


# -- settle by message id -----------------------------------------------------------


def check_settle_count(settings: Settings, ids: Sequence[int]) -> None:
    """Refuse to settle more than ``max_batch`` messages in one call (413)."""
    limit = settings.max_batch
    if len(ids) > limit:
        raise ApiError(413, "too_large", f"a batch settles at most {limit} messages")


def capped_lease(settings: Settings, lease: float) -> float:
    """The lease a ``touch`` grants: what was asked, at most ``max_lease_s``."""
    return min(lease, settings.max_lease_s)


def _settled(result: SettleResult, message_id: int, operation: str) -> None:
    if message_id not in result.settled:
        # Unknown, foreign and not-processing ids answer alike: no probing.
        raise InvalidTransition(message_id, operation, "not processing")


async def ack(ctx: BrokerContext, user: User, ids: Sequence[int]) -> SettleResult:
    """Ack in-flight messages by id, whoever holds them, on queues ``user`` may consume."""
    result = await ctx.broker.ack(ids, allowed=may_consume(user))
    if ctx.tracing is not None:
        ctx.tracing.settled(result.settled, "ack")
    return result


async def nack(
    ctx: BrokerContext,
    user: User,
    ids: Sequence[int],
    requeue: bool,
    reason: str | None,
    delay_ms: int | None = None,
) -> SettleResult:
    """Nack in-flight messages by id: requeued (redelivered) or failed / dead-lettered.

    A requeue waits ``delay_ms`` if given, else what the queue's ``retry`` policy says.
    """
    result = await ctx.broker.nack(
        ids, requeue=requeue, reason=reason, allowed=may_consume(user), delay_ms=delay_ms
    )
    if ctx.tracing is not None:
        ctx.tracing.settled(result.settled, "nack")
    return result


async def ack_one(
    ctx: BrokerContext, user: User, message_id: int, result: bytes | None = None
) -> SettledResponse:
    """Ack one in-flight message (keeping ``result``); raise `InvalidTransition` if not settled."""
    settled = await ctx.broker.results.ack([message_id], result, may_consume(user))
    if ctx.tracing is not None:
        ctx.tracing.settled(settled.settled, "ack")
    _settled(settled, message_id, "ack")
    return SettledResponse(message_id=message_id, status="processed")


async def nack_one(
    ctx: BrokerContext,
    user: User,
    message_id: int,
    requeue: bool,
    reason: str | None,
    delay_ms: int | None = None,
) -> SettledResponse:
    """Nack one in-flight message; raise `InvalidTransition` if it was not settled."""
    _settled(await nack(ctx, user, [message_id], requeue, reason, delay_ms), message_id, "nack")
    return SettledResponse(message_id=message_id, status="pending" if requeue else "failed")


async def touch(ctx: BrokerContext, user: User, message_id: int, lease: float) -> float:
    """Extend an in-flight message's lease to `capped_lease` seconds from now; its deadline."""
    return await ctx.broker.touch(
        message_id, capped_lease(ctx.settings, lease), allowed=may_consume(user)
    )


# -- cancel, reschedule, pause ----------------------------------------------------------


def reschedule_at(now: float, request: RescheduleRequest) -> float | None:
    """When a reschedule makes a message due (``None``: unchanged), or 422 naming the field.

    ``deliver_at`` and ``delay_ms`` exclude each other; an instant further
    than the delay cap (`broker_core.retry.MAX_DELAY_MS`) from now is refused.
    """
    if request.deliver_at is not None and request.delay_ms is not None:
        raise ApiError(422, "invalid", "give deliver_at or delay_ms, not both (`delay_ms`)")
    if request.deliver_at is None and request.delay_ms is None and request.priority is None:
        raise ApiError(422, "invalid", "give deliver_at, delay_ms or priority (`deliver_at`)")
    if request.delay_ms is not None:
        return now + request.delay_ms / 1000
    if request.deliver_at is None:
        return None
    at = request.deliver_at.timestamp()
    if at > now + MAX_DELAY_MS / 1000:
        raise ApiError(
            422, "invalid", f"deliver_at is at most {MAX_DELAY_MS} ms from now (`deliver_at`)"
        )
    return at


def check_pause_until(now: float, until: datetime | None) -> None:
    """Refuse a pause that would end in the past or past the delay cap (422 naming ``until``)."""
    if until is None:
        return
    at = until.timestamp()
    if at <= now:
        raise ApiError(422, "invalid", "until must be in the future (`until`)")
    if at > now + MAX_DELAY_MS / 1000:
        raise ApiError(422, "invalid", f"until is at most {MAX_DELAY_MS} ms from now (`until`)")


def check_update(now: float, request: UpdateQueueRequest) -> None:
    """Refuse a ``PATCH`` whose ``paused_until`` `check_pause_until` would refuse."""
    until = request.paused_until
    if isinstance(until, datetime):
        check_pause_until(now, until)


async def cancel(ctx: BrokerContext, queue: str, message_id: int) -> None:
    """Cancel a pending or delayed message (the caller has ``manage``); 409 if processing."""
    await retry_commands.cancel(ctx.broker, queue, message_id)


async def reschedule(
    ctx: BrokerContext, queue: str, message_id: int, request: RescheduleRequest
) -> MessageView:
    """Reschedule a pending message (the caller has ``manage``); the message as it is now."""
    at = reschedule_at(ctx.broker.clock(), request)
    return await retry_commands.reschedule(ctx.broker, queue, message_id, at, request.priority)


async def pause(ctx: BrokerContext, queue: str, until: datetime | None) -> QueueInfo:
    """Pause a queue's deliveries (the caller has ``manage``), until ``until`` if given."""
    check_pause_until(ctx.broker.clock(), until)
    return await retry_commands.pause(ctx.broker, queue, until)


async def resume(ctx: BrokerContext, queue: str) -> QueueInfo:
    """Resume a paused queue (the caller has ``manage``)."""
    return await retry_commands.resume(ctx.broker, queue)

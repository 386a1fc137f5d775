"""REST routes of results and histories: ``GET /messages/{id}/result|history``, publish-and-wait.

A waiter costs no polling on one node: `broker_core.results.Results`
wakes it from the ack itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from broker_core.cluster import MAX_MESSAGE_ID
from broker_core.errors import MessageNotFound
from broker_core.messages import AckBody, MessageResult, from_timestamp
from broker_core.permissions import require_browse, visible

from ..errors import ApiError
from ..security import user_of
from .bodies import JsonBody

if TYPE_CHECKING:
    from broker_core.auth import User
    from broker_core.broker import Broker
    from broker_core.history import HistoryEntry
    from broker_core.journal import StoredMessage
    from broker_core.messages import PublishResult

    from ..context import BrokerContext

from litestar.params import FromPath, QueryParameter

from ..context import ctx_of

__all__ = [
    "MAX_WAIT_S",
    "MessageHistory",
    "ResultController",
    "ack_result",
    "ack_result_value",
    "check_wait",
    "history_events",
    "message_result",
    "read_ack_result",
    "readable",
]

MAX_WAIT_S = 30.0
"""Longest ``wait`` of a result read or ``wait_result`` of a publish."""

_ack_body = JsonBody(AckBody)


class MessageHistory(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /messages/{id}/history``: every event of the message's life, in order."""

    message_id: int
    queue: str
    events: list[dict[str, Any]]


def check_wait(wait: float, field: str = "wait") -> None:
    """422 when a wait is beyond `MAX_WAIT_S` (or negative)."""
    if not 0 <= wait <= MAX_WAIT_S:
        raise ApiError(422, "invalid", f"{field}: between 0 and {MAX_WAIT_S:g} seconds")


def ack_result(broker: Broker, raw: msgspec.Raw) -> bytes | None:
    """The result of an ack (``None`` when left out or ``null``), or 422 when over the limit."""
    result = bytes(raw)
    if result in (b"", b"null"):
        return None
    limit = broker.results.max_bytes
    if len(result) > limit:
        raise ApiError(422, "invalid", f"result: larger than {limit} bytes")
    return result


def ack_result_value(broker: Broker, value: Any) -> bytes | None:
    """`ack_result` of a decoded value (a WebSocket frame's, a GraphQL argument's)."""
    if value is None:
        return None
    return ack_result(broker, msgspec.Raw(msgspec.json.encode(value)))


async def read_ack_result(request: Request[Any, Any, Any], ctx: BrokerContext) -> bytes | None:
    """The ``result`` of an ack's body (none when the body is empty)."""
    body = await request.body()
    if not body.strip():
        return None
    data = _ack_body.decode(body, ctx.settings.max_json_depth)
    return ack_result(ctx.broker, data.result)


async def readable(ctx: BrokerContext, user: User, message_id: int) -> StoredMessage:
    """The stored message, if ``user`` may read its result and history (consume or manage)."""
    if not 0 < message_id <= MAX_MESSAGE_ID:
        raise MessageNotFound(message_id)  # no id past 64 bits was ever handed out
    stored = await ctx.broker.storage.get_message(message_id)
    if stored is None or not visible(user, stored.queue):
        raise MessageNotFound(message_id)
    require_browse(user, stored.queue)
    return stored


async def message_result(ctx: BrokerContext, stored: StoredMessage) -> MessageResult:
    """The result view of a processed or failed message."""
    result = await ctx.broker.results.result(stored.entry.id)
    return MessageResult(
        message_id=stored.entry.id,
        queue=stored.queue,
        status=stored.status.name.lower(),
        result=None if result is None else msgspec.Raw(result),
        last_error=stored.entry.last_error,
    )


def _iso(at: float) -> str:
    return from_timestamp(at).isoformat().replace("+00:00", "Z")


def history_events(events: list[HistoryEntry]) -> list[dict[str, Any]]:
    """Events as the API shows them: ``{at, event, ...details}`` (``at`` ISO 8601)."""
    shown = []
    for event in events:
        item: dict[str, Any] = {"at": _iso(event.at), "event": event.event}
        if event.detail:
            for key, value in event.detail.items():
                item.setdefault(key, value)
        if "until" in item and isinstance(item["until"], float):
            item["until"] = _iso(item["until"])
        shown.append(item)
    return shown


class ResultController(Controller):
    """``/messages/{id}/result`` and ``/messages/{id}/history``."""

    path = "/messages"
    tags = ["messages"]

    @get(
        "/{message_id:int}/result",
        responses={204: ResponseSpec(None, description="No outcome within `wait` seconds")},
    )
    async def result(
        self,
        request: Request[Any, Any, Any],
        message_id: FromPath[int],
        wait: Annotated[
            float, QueryParameter(description="Seconds to wait for the outcome (at most 30).")
        ] = 0.0,
    ) -> Response[MessageResult | None]:
        """The message's result once processed or failed; 204 when ``wait`` passes first."""
        check_wait(wait)
        ctx = ctx_of(request)
        await readable(ctx, user_of(request), message_id)
        done = await ctx.broker.results.wait(message_id, wait)
        if done is None:
            if await ctx.broker.storage.get_message(message_id) is None:
                raise MessageNotFound(message_id)
            return Response(None, status_code=204)
        return Response(await message_result(ctx, done), status_code=200)

    @get("/{message_id:int}/history")
    async def history(
        self, request: Request[Any, Any, Any], message_id: FromPath[int]
    ) -> MessageHistory:
        """Every event of the message's life, in order (``BROKER_HISTORY``)."""
        ctx = ctx_of(request)
        stored = await readable(ctx, user_of(request), message_id)
        events = await ctx.broker.results.history(message_id)
        return MessageHistory(
            message_id=message_id, queue=stored.queue, events=history_events(events)
        )


class PublishedResult(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """201 of a publish with ``wait_result``: the message and its outcome."""

    message_id: int
    queue: str
    status: str
    created_at: Any
    result: msgspec.Raw | None = None
    last_error: str | None = None


async def publish_and_wait(
    ctx: BrokerContext, published: PublishResult, wait: float
) -> Response[Any]:
    """201 with the result when it came within ``wait`` s, else 202 with the message id."""
    done = await ctx.broker.results.wait(published.message_id, wait)
    if done is None:
        return Response(published, status_code=202)
    view = await message_result(ctx, done)
    return Response(
        PublishedResult(
            message_id=published.message_id,
            queue=published.queue,
            status=view.status,
            created_at=published.created_at,
            result=view.result,
            last_error=view.last_error,
        ),
        status_code=201,
    )

"""REST routes of queues and their messages: CRUD, purge, publish, consume, browse, retry."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from broker_core.auth import Action
from broker_core.messages import (
    BatchPublishRequest,
    BatchPublishResponse,
    ConsumerInfo,
    CreateQueueRequest,
    FanoutPublishRequest,
    MessagesPage,
    MessageView,
    PauseRequest,
    PublishRequest,
    PublishResult,
    PurgeResponse,
    QueueInfo,
    RescheduleRequest,
    UpdateQueueRequest,
)
from broker_core.permissions import require, require_browse, require_visible, visible
from broker_core.types import MessageStatus

from .. import operations
from ..context import ctx_of
from ..decoding import deliverable, fail_undeliverable, showable, showable_page
from ..observability.tracing import trace_headers, with_trace
from ..security import user_of
from .bodies import JsonBody

__all__ = [
    "ConsumeResponse",
    "QueueController",
    "RedriveResponse",
    "list_consumers",
    "publish_fanout",
]


class RedriveResponse(msgspec.Struct, kw_only=True, frozen=True):
    """How many failed or dead-lettered messages a redrive moved back to pending."""

    moved: int


class ConsumeResponse(msgspec.Struct, kw_only=True, frozen=True):
    """Messages leased by ``GET /queues/{name}/messages/consume``."""

    messages: list[MessageView]


from .results import PublishedResult, check_wait, publish_and_wait  # noqa: E402

_publish_body = JsonBody(PublishRequest)
_batch_body = JsonBody(BatchPublishRequest)
_fanout_body = JsonBody(FanoutPublishRequest)

Name = Annotated[str, PathParameter(description="The queue's name.", max_length=200)]


class QueueController(Controller):
    """``/queues``: what a queue is and what is in it."""

    path = "/queues"
    tags = ["queues"]

    @get("/", opt={"rate_limit": "default"})
    async def list_queues(self, request: Request[Any, Any, Any]) -> list[QueueInfo]:
        """Every queue the caller has a permission on."""
        user = user_of(request)
        broker = ctx_of(request).broker
        names = [name for name in broker.queue_names() if visible(user, name)]
        await broker.sync_counts(names)
        return broker.infos(names)

    @post("/", status_code=HTTP_201_CREATED, opt={"rate_limit": "admin"})
    async def create_queue(
        self, request: Request[Any, Any, Any], data: JSONBody[CreateQueueRequest]
    ) -> QueueInfo:
        """Create a queue (``manage``); 409 if it exists."""
        require(user_of(request), Action.MANAGE, data.name)
        return await ctx_of(request).broker.create_queue(data)

    @get("/{name:str}", opt={"rate_limit": "default"})
    async def get_queue(self, request: Request[Any, Any, Any], name: Name) -> QueueInfo:
        """Counts and options of one queue."""
        require_visible(user_of(request), name)
        broker = ctx_of(request).broker
        await broker.sync_counts([name])
        return broker.info(name)

    @patch("/{name:str}", opt={"rate_limit": "admin"})
    async def update_queue(
        self, request: Request[Any, Any, Any], name: Name, data: JSONBody[UpdateQueueRequest]
    ) -> QueueInfo:
        """Change a queue's options (``manage``)."""
        require(user_of(request), Action.MANAGE, name)
        ctx = ctx_of(request)
        operations.check_update(ctx.broker.clock(), data)
        return await ctx.broker.update_queue(name, data)

    @delete("/{name:str}", status_code=HTTP_204_NO_CONTENT, opt={"rate_limit": "admin"})
    async def delete_queue(self, request: Request[Any, Any, Any], name: Name) -> None:
        """Delete a queue and its messages (``manage``)."""
        require(user_of(request), Action.MANAGE, name)
        await ctx_of(request).broker.delete_queue(name)

    @post("/{name:str}/purge", status_code=200, opt={"rate_limit": "admin"})
    async def purge_queue(self, request: Request[Any, Any, Any], name: Name) -> PurgeResponse:
        """Delete the queue's pending messages (``manage``)."""
        require(user_of(request), Action.MANAGE, name)
        return PurgeResponse(purged=await ctx_of(request).broker.purge(name))

    @post("/{name:str}/redrive", status_code=200, opt={"rate_limit": "admin"})
    async def redrive(self, request: Request[Any, Any, Any], name: Name) -> RedriveResponse:
        """Move failed and dead-lettered messages back to pending (``manage``)."""
        require(user_of(request), Action.MANAGE, name)
        return RedriveResponse(moved=await ctx_of(request).broker.redrive(name))

    @post(
        "/{name:str}/messages",
        status_code=HTTP_201_CREATED,
        opt={"rate_limit": "publish"},
        operation_class=_publish_body.operation,
        responses={
            202: ResponseSpec(
                PublishResult, description="Stored; no result within `wait_result` seconds"
            )
        },
    )
    async def publish(
        self,
        request: Request[Any, Any, Any],
        name: Name,
        wait_result: Annotated[
            float | None,
            QueryParameter(
                description="Wait this long (at most 30 s) for the result: 201 with it, else 202."
            ),
        ] = None,
    ) -> Response[PublishResult | PublishedResult]:
        """Publish one message; answered once it is committed (``publish``)."""
        require(user_of(request), Action.PUBLISH, name)
        ctx = ctx_of(request)
        if wait_result is not None:
            check_wait(wait_result, "wait_result")
        data = await _publish_body.read(
            request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth
        )
        messages = [data]
        trace = trace_headers(request.scope["headers"])
        if trace is not None:
            messages = with_trace(messages, trace)
        [result] = await operations.publish(ctx, name, messages)
        if wait_result is None:
            return Response(result, status_code=HTTP_201_CREATED)
        return await publish_and_wait(ctx, result, wait_result)

    @post(
        "/{name:str}/messages/batch",
        status_code=HTTP_201_CREATED,
        opt={"rate_limit": "publish"},
        operation_class=_batch_body.operation,
    )
    async def publish_batch(
        self, request: Request[Any, Any, Any], name: Name
    ) -> BatchPublishResponse:
        """Publish several messages atomically; the answer lists them in order."""
        require(user_of(request), Action.PUBLISH, name)
        ctx = ctx_of(request)
        data = await _batch_body.read(
            request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth
        )
        messages = data.messages
        trace = trace_headers(request.scope["headers"])
        if trace is not None:
            messages = with_trace(messages, trace)
        return BatchPublishResponse(messages=await operations.publish(ctx, name, messages))

    @get(
        "/{name:str}/messages/consume",
        opt={"rate_limit": "consume"},
        responses={204: ResponseSpec(None, description="No message came within `wait` seconds")},
    )
    async def consume(
        self,
        request: Request[Any, Any, Any],
        name: Name,
        wait: Annotated[
            float,
            QueryParameter(
                ge=0, description="Seconds to wait for a message, at most BROKER_MAX_WAIT_S (20)."
            ),
        ] = 0.0,
        max: Annotated[
            int, QueryParameter(ge=1, le=1000, description="Most messages to lease.")
        ] = 1,
        lease: Annotated[
            float | None,
            QueryParameter(
                gt=0,
                description="Lease in seconds (queue default).",
                # Litestar leaves an optional parameter's bounds out of the document.
                schema_extra={"exclusiveMinimum": 0},
            ),
        ] = None,
    ) -> Response[ConsumeResponse | None]:
        """Lease up to ``max`` messages, long-polling up to ``wait`` seconds; 204 if none came."""
        require(user_of(request), Action.CONSUME, name)
        settings = ctx_of(request).settings
        if lease is not None and lease > settings.max_lease_s:
            raise ValidationException(f"lease is at most {settings.max_lease_s} seconds")
        if wait > settings.max_wait_s:
            # Refused, not capped (as SQS refuses WaitTimeSeconds above 20): a client
            # asking for 60 s must not believe it waited 60 s when it waited 20.
            raise ValidationException(f"wait is at most {settings.max_wait_s} seconds")
        broker = ctx_of(request).broker
        messages = await broker.pull(name, max, wait, lease)
        tracing = ctx_of(request).tracing
        if tracing is not None:
            tracing.delivered(
                name, ((m.message_id, m.headers, m.attempt) for m in messages), "http"
            )
        poison = [view.message_id for view in messages if not deliverable(bytes(view.content))]
        if poison:
            # Failed, not answered: a body that breaks the input rule would make the
            # whole answer invalid JSON, and redelivering it would repeat that forever.
            await fail_undeliverable(broker, name, poison)
            messages = [view for view in messages if view.message_id not in poison]
        if not messages:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        return Response(ConsumeResponse(messages=messages))

    @get("/{name:str}/messages", opt={"rate_limit": "default"})
    async def browse(
        self,
        request: Request[Any, Any, Any],
        name: Name,
        status: Annotated[
            Literal["pending", "processing", "processed", "failed"] | None,
            QueryParameter(description="Only messages in this status (default: all)."),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        cursor: Annotated[
            int | None,
            QueryParameter(
                ge=0, description="next_cursor of the last page", schema_extra={"minimum": 0}
            ),
        ] = None,
    ) -> MessagesPage:
        """Browse messages by ascending id (``consume`` or ``manage``)."""
        require_browse(user_of(request), name)
        parsed = None if status is None else MessageStatus.parse(status)
        return showable_page(await ctx_of(request).broker.browse(name, parsed, limit, cursor))

    @get("/{name:str}/messages/{message_id:int}", opt={"rate_limit": "default"})
    async def get_message(
        self, request: Request[Any, Any, Any], name: Name, message_id: FromPath[int]
    ) -> MessageView:
        """One message of the queue by id (``consume`` or ``manage``).

        A cancelled, expired or dropped message (no dead-letter queue) is kept
        body-less for the processed retention: status ``ended``, why in
        ``last_error`` (``cancelled``, ``expired``, ``maxlen``), ``content`` null.
        """
        require_browse(user_of(request), name)
        return showable(await ctx_of(request).broker.get_message(name, message_id))

    @post(
        "/{name:str}/messages/{message_id:int}/retry", status_code=200, opt={"rate_limit": "admin"}
    )
    async def retry(
        self, request: Request[Any, Any, Any], name: Name, message_id: FromPath[int]
    ) -> MessageView:
        """Move a failed or dead-lettered message back to pending (``manage``)."""
        require(user_of(request), Action.MANAGE, name)
        return showable(await ctx_of(request).broker.retry(name, message_id))

    @delete(
        "/{name:str}/messages/{message_id:int}",
        status_code=HTTP_204_NO_CONTENT,
        opt={"rate_limit": "admin"},
    )
    async def cancel_message(
        self, request: Request[Any, Any, Any], name: Name, message_id: FromPath[int]
    ) -> None:
        """Cancel a pending, delayed or backing-off message (``manage``); 409 if processing."""
        require(user_of(request), Action.MANAGE, name)
        await operations.cancel(ctx_of(request), name, message_id)

    @patch("/{name:str}/messages/{message_id:int}", opt={"rate_limit": "admin"})
    async def reschedule_message(
        self,
        request: Request[Any, Any, Any],
        name: Name,
        message_id: FromPath[int],
        data: JSONBody[RescheduleRequest],
    ) -> MessageView:
        """Reschedule a pending message: ``deliver_at`` or ``delay_ms``, ``priority``."""
        require(user_of(request), Action.MANAGE, name)
        ctx = ctx_of(request)
        return showable(await operations.reschedule(ctx, name, message_id, data))

    @post("/{name:str}/pause", status_code=200, opt={"rate_limit": "admin"})
    async def pause(
        self,
        request: Request[Any, Any, Any],
        name: Name,
        data: JSONBody[PauseRequest | None] = None,
    ) -> QueueInfo:
        """Hold deliveries (until ``until``, else until resumed); publishes go on."""
        require(user_of(request), Action.MANAGE, name)
        until = data.until if data is not None else None
        return await operations.pause(ctx_of(request), name, until)

    @post("/{name:str}/resume", status_code=200, opt={"rate_limit": "admin"})
    async def resume(self, request: Request[Any, Any, Any], name: Name) -> QueueInfo:
        """Deliver again from a paused queue (``manage``)."""
        require(user_of(request), Action.MANAGE, name)
        return await operations.resume(ctx_of(request), name)


@get("/consumers", tags=["queues"])
async def list_consumers(request: Request[Any, Any, Any]) -> list[ConsumerInfo]:
    """Push consumers of the queues the caller may see, with their unacked deliveries."""
    user = user_of(request)
    broker = ctx_of(request).broker
    return broker.consumers(name for name in broker.queue_names() if visible(user, name))


@post(
    "/publish",
    status_code=HTTP_201_CREATED,
    opt={"rate_limit": "publish"},
    tags=["messages"],
    operation_class=_fanout_body.operation,
)
async def publish_fanout(request: Request[Any, Any, Any]) -> BatchPublishResponse:
    """Publish one message to several queues, committed atomically (``publish`` on each)."""
    ctx = ctx_of(request)
    data = await _fanout_body.read(
        request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth
    )
    user = user_of(request)
    for name in data.queues:
        require(user, Action.PUBLISH, name)
    return BatchPublishResponse(messages=await operations.publish_fanout(ctx, data.queues, data))

"""The GraphQL ``Query`` root: queues, one queue, a queue's messages, and stats.

Each resolver checks what the matching REST route checks and calls the same
`Broker` method, so both answer alike (DESIGN.md, Public contract).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import strawberry

from broker_core.permissions import require_admin, require_browse, require_visible, visible
from broker_core.service_tokens import STATS_READ, ServiceTokenView, require_scope
from broker_core.types import MessageStatus

from ..decoding import showable_page
from ..errors import ApiError
from ..observability.stats import build_stats
from .context import context_of
from .results import ResultsQuery
from .schedules import ScheduleQueries
from .structs import Long  # noqa: TC001 - Strawberry reads argument annotations at runtime
from .types import MessagesPage, Queue, ServiceToken, Stats
from .webhooks import WebhookQuery

if TYPE_CHECKING:
    from broker_core.messages import MessagesPage as MessagesPageStruct, QueueInfo

    from ..observability.stats import StatsResponse

__all__ = ["MAX_PAGE", "Query"]

MAX_PAGE = 1000
"""Largest ``limit`` of ``messages`` (as REST's browse)."""


@strawberry.type(description="Read the broker's queues, messages and figures.")
class Query(ScheduleQueries, WebhookQuery, ResultsQuery):
    @strawberry.field(
        graphql_type=list[Queue], description="Every queue you have a permission on, by name."
    )
    async def queues(self, info: strawberry.Info) -> list[QueueInfo]:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.default)
        broker = context.ctx.broker
        names = [name for name in broker.queue_names() if visible(user, name)]
        await broker.sync_counts(names)
        return broker.infos(names)

    @strawberry.field(
        graphql_type=Queue | None,
        description="One queue; null with a queue_not_found error if you can't see it.",
    )
    async def queue(self, info: strawberry.Info, name: str) -> QueueInfo:
        context = context_of(info)
        require_visible(context.caller(), name)
        context.spend(context.ctx.limits.default)
        broker = context.ctx.broker
        await broker.sync_counts([name])
        return broker.info(name)

    @strawberry.field(
        graphql_type=MessagesPage,
        description=(
            "A page of a queue's messages by ascending id (`consume` or `manage`); "
            "`status` is pending, processing, processed or failed."
        ),
    )
    async def messages(
        self,
        info: strawberry.Info,
        queue: str,
        status: str | None = None,
        limit: int = 100,
        after: Long | None = None,
    ) -> MessagesPageStruct:
        context = context_of(info)
        require_browse(context.caller(), queue)
        context.spend(context.ctx.limits.default)
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(422, "invalid", f"limit must be between 1 and {MAX_PAGE}")
        if after is not None and after < 0:
            raise ApiError(422, "invalid", "after must be a message id (0 or more)")
        parsed = None
        if status is not None:
            try:
                parsed = MessageStatus.parse(status)
            except ValueError as exc:
                raise ApiError(422, "invalid", str(exc)) from None
        return showable_page(await context.ctx.broker.browse(queue, parsed, limit, after))

    @strawberry.field(
        graphql_type=Stats,
        description="The broker's figures, as `GET /stats` answers them (any user; `stats:read`).",
    )
    def stats(self, info: strawberry.Info) -> StatsResponse:
        context = context_of(info)
        user = context.caller()
        require_scope(user, STATS_READ)
        context.spend(context.ctx.limits.admin)
        return build_stats(context.ctx, user=user)

    @strawberry.field(
        graphql_type=list[ServiceToken],
        description="Every service token, oldest first (admins; never the secret).",
    )
    def service_tokens(self, info: strawberry.Info) -> list[ServiceTokenView]:
        context = context_of(info)
        require_admin(context.caller(), "manage service tokens")
        return [ServiceTokenView.of(t) for t in context.ctx.accounts.service_tokens()]

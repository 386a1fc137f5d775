"""GraphQL of webhooks: the ``webhooks(queue)`` query and the create, pause/resume and delete
mutations (``manage`` and ``consume`` on the queue, as over REST).

``Query`` inherits `WebhookQuery` and ``Mutation`` `WebhookMutation`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import strawberry
from strawberry.scalars import JSON  # noqa: TC002 - Strawberry reads annotations at runtime

from broker_core.auth import Action
from broker_core.permissions import require
from broker_core.webhooks import CreateWebhookRequest, WebhookView

from .context import GraphQLContext, context_of
from .structs import object_type, to_struct

if TYPE_CHECKING:
    from ..webhooks import Webhooks

__all__ = ["Webhook", "WebhookMutation", "WebhookQuery"]

Webhook = object_type(
    WebhookView,
    name="Webhook",
    description=(
        "An HTTP endpoint a queue's messages are pushed to: its state (active, paused, "
        "disabled), this node's counters, last error and recent attempts. `secret` is shown "
        "only by `createWebhook`."
    ),
)


def _webhooks(info: strawberry.Info, queue: str, admin: bool) -> tuple[GraphQLContext, Webhooks]:
    context = context_of(info)
    user = context.caller()
    require(user, Action.MANAGE, queue)
    require(user, Action.CONSUME, queue)
    context.spend(context.ctx.limits.admin if admin else context.ctx.limits.default)
    return context, context.ctx.webhooks


@strawberry.type
class WebhookQuery:
    """The ``webhooks`` field of ``Query``."""

    @strawberry.field(
        graphql_type=list[Webhook],
        description="The webhooks of a queue (`manage` and `consume`), never their secrets.",
    )
    async def webhooks(self, info: strawberry.Info, queue: str) -> list[WebhookView]:
        context, webhooks = _webhooks(info, queue, admin=False)
        context.ctx.broker.actor(queue)
        return webhooks.list(queue)


@strawberry.type
class WebhookMutation:
    """Create, pause, resume and delete webhooks."""

    @strawberry.mutation(
        graphql_type=Webhook,
        description=(
            "Push a queue's messages to `url` (`manage` and `consume`); the answer shows the "
            "secret, once. `headers` is a JSON object of extra request headers."
        ),
    )
    async def create_webhook(
        self,
        info: strawberry.Info,
        queue: str,
        url: str,
        secret: str | None = None,
        concurrency: int | None = None,
        timeout_ms: int | None = None,
        headers: JSON | None = None,
    ) -> WebhookView:
        context, webhooks = _webhooks(info, queue, admin=True)
        fields: dict[str, Any] = {
            "url": url,
            "secret": secret,
            "concurrency": concurrency,
            "timeout_ms": timeout_ms,
            "headers": headers,
        }
        request = to_struct(
            None, CreateWebhookRequest, **{k: v for k, v in fields.items() if v is not None}
        )
        return await webhooks.create(queue, request, context.caller().username)

    @strawberry.mutation(
        graphql_type=Webhook,
        description="Pause (true) or resume (false) a webhook; resuming re-enables after a 410.",
    )
    async def pause_webhook(
        self, info: strawberry.Info, queue: str, id: str, paused: bool = True
    ) -> WebhookView:
        _, webhooks = _webhooks(info, queue, admin=True)
        return await webhooks.set_paused(queue, id, paused)

    @strawberry.mutation(description="Delete a webhook; true when done.")
    async def delete_webhook(self, info: strawberry.Info, queue: str, id: str) -> bool:
        _, webhooks = _webhooks(info, queue, admin=True)
        await webhooks.delete(queue, id)
        return True

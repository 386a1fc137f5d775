"""REST routes of webhooks: ``/queues/{name}/webhooks`` (``manage`` and ``consume``)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from broker_core.auth import Action, User
from broker_core.permissions import require
from broker_core.webhooks import CreateWebhookRequest, UpdateWebhookRequest, WebhookView

from ..context import ctx_of
from ..security import user_of

__all__ = ["WebhookController", "require_webhooks"]

Name = Annotated[str, PathParameter(description="The queue's name.", max_length=200)]
Id = Annotated[str, PathParameter(description="The webhook's id.", max_length=64)]


def require_webhooks(user: User, queue: str) -> None:
    """A webhook consumes a queue on someone's behalf: it needs ``manage`` and ``consume``."""
    require(user, Action.MANAGE, queue)
    require(user, Action.CONSUME, queue)


class WebhookController(Controller):
    """``/queues/{name}/webhooks``: HTTP endpoints the queue's messages are pushed to."""

    path = "/queues/{name:str}/webhooks"
    tags = ["webhooks"]

    @post("/", status_code=HTTP_201_CREATED, opt={"rate_limit": "admin"})
    async def create_webhook(
        self, request: Request[Any, Any, Any], name: Name, data: JSONBody[CreateWebhookRequest]
    ) -> WebhookView:
        """Create a webhook; the answer shows its secret, once."""
        user = user_of(request)
        require_webhooks(user, name)
        return await ctx_of(request).webhooks.create(name, data, user.username)

    @get("/", opt={"rate_limit": "default"})
    async def list_webhooks(self, request: Request[Any, Any, Any], name: Name) -> list[WebhookView]:
        """The queue's webhooks with their state, counters and recent attempts (no secrets)."""
        require_webhooks(user_of(request), name)
        ctx = ctx_of(request)
        ctx.broker.actor(name)
        return ctx.webhooks.list(name)

    @patch("/{webhook_id:str}", opt={"rate_limit": "admin"})
    async def update_webhook(
        self,
        request: Request[Any, Any, Any],
        name: Name,
        webhook_id: Id,
        data: JSONBody[UpdateWebhookRequest],
    ) -> WebhookView:
        """Pause (``{"paused": true}``) or resume a webhook; resuming re-enables after a 410."""
        require_webhooks(user_of(request), name)
        return await ctx_of(request).webhooks.set_paused(name, webhook_id, data.paused)

    @delete("/{webhook_id:str}", status_code=HTTP_204_NO_CONTENT, opt={"rate_limit": "admin"})
    async def delete_webhook(
        self, request: Request[Any, Any, Any], name: Name, webhook_id: Id
    ) -> None:
        """Delete a webhook; what it held goes back to the queue."""
        require_webhooks(user_of(request), name)
        await ctx_of(request).webhooks.delete(name, webhook_id)

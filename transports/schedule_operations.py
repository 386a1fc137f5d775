"""Schedule operations every transport calls: the permission, the limits, then the scheduler.

Changing a queue's schedules (create, pause, resume, delete) needs
``manage`` on the queue. Reading them needs what browsing its messages
needs, ``consume`` or ``manage``: a schedule holds the content of the
messages it publishes. REST (`transports.rest.schedules`) and GraphQL call
these, so the rules live once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker_core.auth import Action
from broker_core.permissions import require, require_browse

from .operations import check_content, check_headers

if TYPE_CHECKING:
    from broker_core.auth import User
    from broker_core.schedules import CreateScheduleRequest, ScheduleView

    from .context import BrokerContext

__all__ = ["create", "delete", "get", "list_schedules", "set_paused"]


async def create(
    ctx: BrokerContext, user: User, queue: str, request: CreateScheduleRequest
) -> ScheduleView:
    """Create a schedule (``manage``); its content and headers obey the publish limits."""
    require(user, Action.MANAGE, queue)
    check_content(ctx.settings, request.content)
    check_headers(ctx.settings, request.headers)
    return await ctx.scheduler.create(queue, request)


async def list_schedules(ctx: BrokerContext, user: User, queue: str) -> list[ScheduleView]:
    """The queue's schedules (``consume`` or ``manage``)."""
    require_browse(user, queue)
    return await ctx.scheduler.list_views(queue)


async def get(ctx: BrokerContext, user: User, queue: str, name: str) -> ScheduleView:
    """One schedule (``consume`` or ``manage``)."""
    require_browse(user, queue)
    return await ctx.scheduler.get(queue, name)


async def set_paused(
    ctx: BrokerContext, user: User, queue: str, name: str, paused: bool
) -> ScheduleView:
    """Pause or resume a schedule (``manage``)."""
    require(user, Action.MANAGE, queue)
    return await ctx.scheduler.set_paused(queue, name, paused)


async def delete(ctx: BrokerContext, user: User, queue: str, name: str) -> None:
    """Delete a schedule (``manage``)."""
    require(user, Action.MANAGE, queue)
    await ctx.scheduler.delete(queue, name)

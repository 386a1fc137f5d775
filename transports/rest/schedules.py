"""REST routes of a queue's recurring schedules: ``/queues/{name}/schedules``."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from broker_core.schedules import CreateScheduleRequest, ScheduleView, UpdateScheduleRequest

from .. import schedule_operations as schedules
from ..context import ctx_of
from ..security import user_of
from .bodies import JsonBody

__all__ = ["ScheduleController"]

_create_body = JsonBody(CreateScheduleRequest)

Name = Annotated[str, PathParameter(description="The queue's name.", max_length=200)]
ScheduleName = Annotated[str, PathParameter(description="The schedule's name.", max_length=200)]


class ScheduleController(Controller):
    """``/queues/{name}/schedules``: messages published on a timetable."""

    path = "/queues/{name:str}/schedules"
    tags = ["schedules"]
    opt = {"rate_limit": "admin"}

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        operation_class=_create_body.operation,
    )
    async def create_schedule(self, request: Request[Any, Any, Any], name: Name) -> ScheduleView:
        """Create a schedule (``manage``): 409 if the name is taken, 422 naming a bad field."""
        ctx = ctx_of(request)
        data = await _create_body.read(
            request, ctx.settings.max_body_bytes, ctx.settings.max_json_depth
        )
        return await schedules.create(ctx, user_of(request), name, data)

    @get("/", opt={"rate_limit": "default"})
    async def list_schedules(
        self, request: Request[Any, Any, Any], name: Name
    ) -> list[ScheduleView]:
        """The queue's schedules with their next fire (``consume`` or ``manage``)."""
        return await schedules.list_schedules(ctx_of(request), user_of(request), name)

    @get("/{schedule:str}", opt={"rate_limit": "default"})
    async def get_schedule(
        self, request: Request[Any, Any, Any], name: Name, schedule: ScheduleName
    ) -> ScheduleView:
        """One schedule (``consume`` or ``manage``)."""
        return await schedules.get(ctx_of(request), user_of(request), name, schedule)

    @patch("/{schedule:str}")
    async def update_schedule(
        self,
        request: Request[Any, Any, Any],
        name: Name,
        schedule: ScheduleName,
        data: JSONBody[UpdateScheduleRequest],
    ) -> ScheduleView:
        """Pause or resume a schedule (``manage``); a resume does not catch up the pause."""
        return await schedules.set_paused(
            ctx_of(request), user_of(request), name, schedule, data.paused
        )

    @delete("/{schedule:str}", status_code=HTTP_204_NO_CONTENT)
    async def delete_schedule(
        self, request: Request[Any, Any, Any], name: Name, schedule: ScheduleName
    ) -> None:
        """Delete a schedule (``manage``)."""
        await schedules.delete(ctx_of(request), user_of(request), name, schedule)

"""GraphQL fields of recurring schedules: queries ``schedules`` and ``schedule``, mutations
``createSchedule``, ``pauseSchedule``, ``resumeSchedule`` and ``deleteSchedule``.

The roots (`queries.Query`, `mutations.Mutation`) inherit these classes. Each
resolver calls the rule REST calls (`transports.schedule_operations`) with
the same Structs, so permissions, validation and answers agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import strawberry

from broker_core.schedules import CreateScheduleRequest, ScheduleView

from .. import schedule_operations as operations
from .context import context_of
from .structs import input_type, object_type, to_struct

__all__ = ["Schedule", "ScheduleInput", "ScheduleMutations", "ScheduleQueries"]

Schedule = object_type(
    ScheduleView,
    name="Schedule",
    description="A recurring schedule of a queue: its timetable, next fire and last fire.",
)

if TYPE_CHECKING:
    ScheduleInput = Any
else:
    ScheduleInput = input_type(
        CreateScheduleRequest,
        name="ScheduleInput",
        description="A new schedule: `name`, exactly one of `cron` and `everyMs`, `content`.",
    )


@strawberry.type
class ScheduleQueries:
    @strawberry.field(
        graphql_type=list[Schedule],
        description="A queue's schedules by name (`consume` or `manage`).",
    )
    async def schedules(self, info: strawberry.Info, queue: str) -> list[ScheduleView]:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.default)
        return await operations.list_schedules(context.ctx, user, queue)

    @strawberry.field(
        graphql_type=Schedule | None,
        description="One schedule of a queue (`consume` or `manage`).",
    )
    async def schedule(self, info: strawberry.Info, queue: str, name: str) -> ScheduleView:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.default)
        return await operations.get(context.ctx, user, queue, name)


@strawberry.type
class ScheduleMutations:
    @strawberry.mutation(
        graphql_type=Schedule,
        description="Create a schedule on a queue (`manage`).",
    )
    async def create_schedule(
        self, info: strawberry.Info, queue: str, schedule: ScheduleInput
    ) -> ScheduleView:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.admin)
        request = to_struct(schedule, CreateScheduleRequest)
        return await operations.create(context.ctx, user, queue, request)

    @strawberry.mutation(
        graphql_type=Schedule,
        description="Pause a schedule (`manage`): it publishes nothing until resumed.",
    )
    async def pause_schedule(self, info: strawberry.Info, queue: str, name: str) -> ScheduleView:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.admin)
        return await operations.set_paused(context.ctx, user, queue, name, True)

    @strawberry.mutation(
        graphql_type=Schedule,
        description="Resume a schedule (`manage`); instants while it was paused are not caught up.",
    )
    async def resume_schedule(self, info: strawberry.Info, queue: str, name: str) -> ScheduleView:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.admin)
        return await operations.set_paused(context.ctx, user, queue, name, False)

    @strawberry.mutation(description="Delete a schedule (`manage`); true when done.")
    async def delete_schedule(self, info: strawberry.Info, queue: str, name: str) -> bool:
        context = context_of(info)
        user = context.caller()
        context.spend(context.ctx.limits.admin)
        await operations.delete(context.ctx, user, queue, name)
        return True

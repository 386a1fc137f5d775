"""`ScheduleMethods`: the client's calls of ``/queues/{name}/schedules`` (a `RestClient` mixin)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec

from broker_core.schedules import ScheduleView

if TYPE_CHECKING:
    from datetime import datetime

    import httpx

__all__ = ["ScheduleMethods"]

_view_decoder = msgspec.json.Decoder(ScheduleView)
_views_decoder = msgspec.json.Decoder(list[ScheduleView])


class ScheduleMethods:
    """Create, list, pause, resume and delete a queue's recurring schedules."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send an authenticated request (`RestClient.request`)."""
        raise NotImplementedError

    async def schedules(self, queue: str) -> list[ScheduleView]:
        """The queue's schedules, with their next and last fire."""
        response = await self.request("GET", f"/queues/{quote(queue)}/schedules")
        return _views_decoder.decode(response.content)

    async def schedule(self, queue: str, name: str) -> ScheduleView:
        """One schedule of a queue."""
        response = await self.request("GET", _path(queue, name))
        return _view_decoder.decode(response.content)

    async def create_schedule(
        self,
        queue: str,
        name: str,
        content: Any,
        *,
        cron: str | None = None,
        every_ms: int | None = None,
        timezone: str = "UTC",
        headers: dict[str, str] | None = None,
        priority: int | None = None,
        ttl_ms: int | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        paused: bool = False,
    ) -> ScheduleView:
        """Create a schedule: exactly one of ``cron`` (five fields, in ``timezone``) and
        ``every_ms``; each fire publishes ``content`` to ``queue``."""
        optional = {
            "cron": cron,
            "every_ms": every_ms,
            "headers": headers,
            "priority": priority,
            "ttl_ms": ttl_ms,
            "start_at": None if start_at is None else start_at.isoformat(),
            "end_at": None if end_at is None else end_at.isoformat(),
        }
        body = {"name": name, "content": content, "timezone": timezone, "paused": paused}
        body.update({key: value for key, value in optional.items() if value is not None})
        response = await self.request("POST", f"/queues/{quote(queue)}/schedules", json=body)
        return _view_decoder.decode(response.content)

    async def pause_schedule(self, queue: str, name: str) -> ScheduleView:
        """Pause a schedule: it publishes nothing until resumed."""
        response = await self.request("PATCH", _path(queue, name), json={"paused": True})
        return _view_decoder.decode(response.content)

    async def resume_schedule(self, queue: str, name: str) -> ScheduleView:
        """Resume a schedule (the instants it was paused are not caught up)."""
        response = await self.request("PATCH", _path(queue, name), json={"paused": False})
        return _view_decoder.decode(response.content)

    async def delete_schedule(self, queue: str, name: str) -> None:
        """Delete a schedule."""
        await self.request("DELETE", _path(queue, name))


def _path(queue: str, name: str) -> str:
    return f"/queues/{quote(queue)}/schedules/{quote(name)}"

"""`Scheduler`: keeps every queue's recurring schedules and fires them when due.

One asyncio task sleeps until the earliest instant any schedule is due
(`schedules.next_wake`), or until a schedule changes; it never polls. Each
fire:

1. claims the instant in storage (`schedules.ScheduleStore.claim`): on
   PostgreSQL a compare-and-set that one node wins; on SQLite a check that
   the schedule is still there, not paused and not fired for it;
2. publishes one message through the broker's own publish path
   (`Broker.publish_nowait`: the same checks, durable, answered after the
   commit) with the headers ``x-schedule`` and ``x-scheduled-for``;
3. records the instant (`journal.FireSchedule`) in the same journal write
   as the message's ``Insert``, so both commit in one transaction or
   neither does: a crash can't leave a message without its record (a
   second fire after restart) or a record without its message.

After downtime `schedules.due` answers only the latest missed instant: one
catch-up message. Several nodes on one database each run a scheduler;
a node learns of schedules another node created or resumed within
`RELOAD_S` (the node that changed one applies it at once, and a claim
refuses a paused or deleted schedule on every node at once).
"""

from __future__ import annotations

import asyncio
import math
from contextlib import suppress
from typing import TYPE_CHECKING

import msgspec
from loguru import logger

from .actor import QueueDeleted
from .errors import BrokerError, QueueNotFound, ScheduleExists, ScheduleNotFound, Unavailable
from .history import scheduled
from .journal import FireSchedule
from .messages import PublishRequest
from .schedules import due, new_schedule, next_wake

if TYPE_CHECKING:
    from collections.abc import Callable

    from .broker import Broker
    from .queue import QueueState
    from .schedules import CreateScheduleRequest, Schedule, ScheduleStore, ScheduleView

__all__ = ["RECHECK_S", "RELOAD_S", "RETRY_S", "Scheduler"]

RELOAD_S = 5.0
"""Shared storage: how often a node reads every schedule again (changes made on other nodes)."""
RECHECK_S = 15.0
"""After another node won an instant: when to look whether it really fired it (it may have died)."""
RETRY_S = 1.0
"""After a fire failed for a reason that may clear (storage unavailable): when to try again."""

Key = tuple[str, str]


class Scheduler:
    """Every schedule of the broker's queues, and the task that fires them.

    Use it as an async context manager, or call `start` and `close`, around
    the broker's own lifetime (it needs the queues' actors).

    Args:
        broker: the broker it publishes through.
        store: where schedules are kept (``storage.schedules``).
        shared: whether other nodes fire from the same store (reload it every `RELOAD_S`).
        clock: the time, in Unix seconds (the broker's by default).
    """

    def __init__(
        self,
        broker: Broker,
        store: ScheduleStore,
        *,
        shared: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._broker = broker
        self._store = store
        self._shared = shared
        self._clock = clock or broker.clock
        self._schedules: dict[Key, Schedule] = {}
        self._handled: dict[Key, float] = {}
        """Instants this node settled without a fire of its own (lost, refused): not due again."""
        self._not_before: dict[Key, float] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reloaded_at = 0.0

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Load every schedule and start firing (missed instants: one catch-up each)."""
        await self._reload()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")
        logger.info("scheduler started", schedules=len(self._schedules))

    async def close(self) -> None:
        """Stop firing (a fire under way is cancelled: its instant is caught up next start)."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- what transports call -------------------------------------------------------

    async def create(self, queue: str, request: CreateScheduleRequest) -> ScheduleView:
        """Create a schedule on ``queue``.

        Raises:
            QueueNotFound: no such queue.
            InvalidSchedule: the definition is invalid (names the field).
            ScheduleExists: the queue has a schedule of that name.
        """
        self._broker.actor(queue)
        now = self._clock()
        schedule = new_schedule(queue, request, now)
        if not await self._store.insert(schedule):
            raise ScheduleExists(queue, request.name)
        self._put(schedule)
        logger.info("schedule created", queue=queue, schedule=schedule.name)
        return schedule.view(now)

    async def list_views(self, queue: str) -> list[ScheduleView]:
        """The schedules of ``queue``, by name (`QueueNotFound` if there is no queue)."""
        self._broker.actor(queue)
        now = self._clock()
        return [schedule.view(now) for schedule in await self._store.load(queue)]

    async def get(self, queue: str, name: str) -> ScheduleView:
        """One schedule (`ScheduleNotFound`)."""
        self._broker.actor(queue)
        schedule = await self._store.get(queue, name)
        if schedule is None:
            raise ScheduleNotFound(queue, name)
        return schedule.view(self._clock())

    async def set_paused(self, queue: str, name: str, paused: bool) -> ScheduleView:
        """Pause or resume a schedule; a resume does not catch up the instants it was paused."""
        self._broker.actor(queue)
        now = self._clock()
        schedule = await self._store.set_paused(queue, name, paused, now)
        if schedule is None:
            raise ScheduleNotFound(queue, name)
        self._put(schedule)
        logger.info("schedule paused" if paused else "schedule resumed", queue=queue, schedule=name)
        return schedule.view(now)

    async def delete(self, queue: str, name: str) -> None:
        """Delete a schedule (`ScheduleNotFound`)."""
        self._broker.actor(queue)
        if not await self._store.delete(queue, name):
            raise ScheduleNotFound(queue, name)
        self._forget((queue, name))
        logger.info("schedule deleted", queue=queue, schedule=name)

    # -- the task -------------------------------------------------------------------

    def _put(self, schedule: Schedule) -> None:
        key = (schedule.queue, schedule.name)
        self._schedules[key] = schedule
        self._handled.pop(key, None)
        self._not_before.pop(key, None)
        self._changed.set()

    def _forget(self, key: Key) -> None:
        self._schedules.pop(key, None)
        self._handled.pop(key, None)
        self._not_before.pop(key, None)
        self._changed.set()

    async def _reload(self) -> None:
        started = self._clock()
        loaded = {(s.queue, s.name): s for s in await self._store.load()}
        for key, schedule in list(self._schedules.items()):
            # One created here while the read was on its way stays.
            if key not in loaded and schedule.created_at < started:
                self._forget(key)
        for key, schedule in loaded.items():
            mine = self._schedules.get(key)
            if mine is None or mine != schedule:
                self._schedules[key] = schedule
        self._reloaded_at = started

    def _due(self, now: float) -> list[tuple[Key, Schedule, float]]:
        """The schedules to fire now, with their instants (queues gone: forgotten)."""
        out = []
        for key, schedule in list(self._schedules.items()):
            if self._broker.find_actor(schedule.queue) is None:
                self._forget(key)  # the queue was deleted: storage deleted its schedules
                continue
            if self._not_before.get(key, 0.0) > now:
                continue
            instant = due(schedule, now, self._handled.get(key, -math.inf))
            if instant is not None:
                out.append((key, schedule, instant))
        return out

    def _next_wake(self, now: float) -> float | None:
        wake = math.inf
        for key, schedule in self._schedules.items():
            at = next_wake(schedule, now, self._handled.get(key, -math.inf))
            if at is not None:
                wake = min(wake, max(at, self._not_before.get(key, 0.0)))
        if self._shared:
            wake = min(wake, self._reloaded_at + RELOAD_S)
        return None if wake == math.inf else wake

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            now = self._clock()
            if self._shared and now >= self._reloaded_at + RELOAD_S:
                try:
                    await self._reload()
                except Exception as exc:
                    logger.opt(exception=exc).warning("reading schedules failed")
                    self._reloaded_at = now
            fires = self._due(now)
            if fires:
                await asyncio.gather(*(self._fire(*fire) for fire in fires))
                continue
            wake = self._next_wake(now)
            timeout = None if wake is None else max(0.0, wake - self._clock())
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def _fire(self, key: Key, schedule: Schedule, instant: float) -> None:
        """Fire ``instant`` of ``schedule`` (never raises: each outcome moves the schedule on)."""
        now = self._clock()
        try:
            if not await self._store.claim(schedule.queue, schedule.name, instant):
                await self._lost(key, instant, now)
                return
            await self._publish(schedule, instant)
        except (Unavailable, OSError, ConnectionError) as exc:
            logger.warning(
                "schedule fire failed; retrying",
                queue=schedule.queue,
                schedule=schedule.name,
                reason=str(exc),
            )
            self._not_before[key] = now + RETRY_S
            return
        except (QueueNotFound, QueueDeleted):
            self._forget(key)  # deleted under the fire: so are its schedules
            return
        except BrokerError as exc:
            # Refused (queue full): this instant is skipped, not retried in a loop.
            logger.warning(
                "schedule fire refused",
                queue=schedule.queue,
                schedule=schedule.name,
                reason=str(exc),
            )
            self._handled[key] = instant
            return
        except Exception as exc:
            logger.opt(exception=exc).error(
                "schedule fire failed", queue=schedule.queue, schedule=schedule.name
            )
            self._not_before[key] = now + RETRY_S
            return
        current = self._schedules.get(key)
        if current is not None:
            last = max(instant, current.last_fired or -math.inf)
            self._schedules[key] = msgspec.structs.replace(current, last_fired=last)
        logger.debug("schedule fired", queue=schedule.queue, schedule=schedule.name, at=instant)

    async def _lost(self, key: Key, instant: float, now: float) -> None:
        """The claim was refused: read the schedule again and settle ``instant`` here."""
        fresh = await self._store.get(*key)
        if fresh is None:
            self._forget(key)
            return
        self._schedules[key] = fresh
        if due(fresh, now) == instant:
            # Another live node holds it. Should it die before firing, the
            # instant is due here again after `RECHECK_S` (its claim can then
            # be taken over; if it did fire, the claim says so).
            self._handled[key] = instant

            def recheck() -> None:
                if self._handled.get(key) == instant:
                    del self._handled[key]
                    self._changed.set()

            asyncio.get_running_loop().call_later(RECHECK_S, recheck)

    async def _publish(self, schedule: Schedule, instant: float) -> None:
        """Publish the message of ``instant`` and its record in one journal write."""
        request = PublishRequest(
            content=msgspec.Raw(schedule.content),
            headers=schedule.message_headers(instant),
            priority=schedule.priority,
            ttl_ms=schedule.ttl_ms,
        )
        scheduled(schedule.name)
        published = self._broker.publish_nowait(schedule.queue, [request])

        def record(state: QueueState, now: float) -> None:
            # Runs in the actor's turn that ran the publish (the mailbox is
            # drained whole, and nothing came between the two), so the record
            # joins its message in the turn's one journal write. A refused
            # publish has failed already.
            if not published.done():
                state.journal_after_last_insert(
                    lambda insert: FireSchedule(
                        schedule.queue, schedule.name, instant, insert.entry.id
                    )
                )

        self._broker.actor(schedule.queue).cast(record)
        await published

"""`QueueActor`: the one asyncio task that owns a queue's `QueueState`.

Callers put commands in the actor's mailbox and await a future. The actor
drains the whole mailbox per turn, applies each command to the state, then
drains the state's outboxes once: journal operations go to storage in one
``write`` (so a burst of publishes joins one group commit), deliveries go to
each consumer's sink in one call, and dead letters go to their queues. A
publish's future resolves only after the batch holding its ``Insert``
committed; when that batch fails, the publish is withdrawn from every
queue (`ActorHooks.withdrawn`), as storage withdrew it. Deadlines (leases,
delays, TTLs) wake the actor through one timer.

On shared storage (several nodes, a `claims.SharedQueueState`) the actor
also runs the claims its state asks for, one at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from loguru import logger

from .claims import SharedQueueState
from .journal import DeliverOp, Insert

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .journal import Journal, Op
    from .messages import Entry
    from .pending import Item
    from .queue import QueueState

__all__ = ["ActorHooks", "DeliverySink", "QueueActor", "QueueDeleted"]

T = TypeVar("T")

_LOAD_WAIT_S = 5.0
_RETRY_PAUSE_S = 0.5

Command = tuple["Callable[[QueueState, float], Any]", "asyncio.Future[Any] | None", bool]
Claim: TypeAlias = "Callable[[str, int, float, float, int], Awaitable[list[Entry]]]"
Waiter: TypeAlias = "tuple[int, float | None, asyncio.Future[list[Entry]], bool]"
"""A parked pull: how many, its lease, its future, and whether it takes "nothing now"."""


class QueueDeleted(Exception):
    """The actor stopped because its queue was deleted; pending calls fail with this."""


class DeliverySink(Protocol):
    """Receives a push consumer's deliveries; must not block (it buffers or encodes)."""

    def __call__(self, queue: str, entries: list[Entry]) -> None: ...


class ActorHooks(Protocol):
    """What an actor tells the broker around it."""

    def dead_letter(self, target: str, items: list[Item]) -> None:
        """Hand dead-lettered messages to the ``target`` queue's actor."""

    def history(self, queue: str, ops: Sequence[Op], now: float) -> Op | None:
        """The history ``ops`` (made at ``now``) record, written in their batch (or ``None``)."""

    def ops_written(self, queue: str, ops: Sequence[Op]) -> None:
        """See every journal operation (in-flight index, events, metrics)."""

    def withdrawn(self, queue: str, entries: list[Entry]) -> None:
        """Messages published to ``queue`` whose batch failed: storage will never hold them."""


class QueueActor:
    """Owns one `QueueState`: applies commands in order and drains its outboxes.

    Use it as an async context manager, or call `start` and `stop`.
    """

    def __init__(
        self,
        state: QueueState,
        journal: Journal,
        hooks: ActorHooks,
        *,
        clock: Callable[[], float] = time.time,
        claim: Claim | None = None,
    ) -> None:
        self.state = state
        self.name = state.name
        self._journal = journal
        self._hooks = hooks
        self._clock = clock
        self._mailbox: deque[Command] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._sinks: dict[int, DeliverySink] = {}
        self._closers: dict[int, Callable[[], object]] = {}
        self._waiters: deque[Waiter] = deque()
        self._closed = False
        self._loader: asyncio.Task[None] | None = None
        self._claim = claim
        self._claimer: asyncio.Task[None] | None = None
        # The claim machine runs for a shared state only, which needs a claim.
        self._shared = state if isinstance(state, SharedQueueState) else None
        assert self._shared is None or claim is not None, "a shared state is given its claim"

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start the actor's task."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"queue-actor:{self.name}"
        )

    async def stop(self, reason: BaseException | None = None) -> None:
        """Stop intake, finish queued commands, then end the task.

        With ``reason``, queued and future calls fail with it instead (queue deleted).
        """
        self._closed = True
        if reason is not None:
            while self._mailbox:
                _, future, _ = self._mailbox.popleft()
                if future is not None and not future.done():
                    future.set_exception(reason)
            for _, _, waiter, _ in self._waiters:
                if not waiter.done():
                    waiter.set_exception(reason)
            self._waiters.clear()
            closers, self._closers = self._closers, {}
            for consumer_id, close in closers.items():
                try:
                    close()
                except Exception as exc:
                    logger.opt(exception=exc).error(
                        "consumer close callback failed", queue=self.name, consumer=consumer_id
                    )
        self._wake()
        if self._task is not None:
            with suppress(asyncio.CancelledError):
                await self._task
        for task in (self._loader, self._claimer):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        if self._timer is not None:
            self._timer.cancel()

    def discard(self) -> list[int]:
        """After `stop` for a deleted queue: let go of its messages; return the ids in flight.

        The bodies it kept in memory go back to the shared budget; storage
        deletes the messages themselves.
        """
        assert self._closed, "only a stopped actor's state is discarded"
        held = list(self.state.processing)
        self.state.purge()
        self.state.take_ops()
        return held

    @property
    def backlog(self) -> int:
        """How many commands wait in the mailbox (an actor that falls behind grows it)."""
        return len(self._mailbox)

    @property
    def waiting(self) -> int:
        """How many long polls are parked, waiting for a message."""
        return len(self._waiters)

    async def __aenter__(self) -> QueueActor:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- mailbox ----------------------------------------------------------------

    def call(
        self, command: Callable[[QueueState, float], T], *, durable: bool = False
    ) -> asyncio.Future[T]:
        """Queue ``command(state, now)``; its future resolves with the result.

        With ``durable``, the future resolves only after the journal batch that
        holds the command's operations has committed.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(QueueDeleted(self.name))
            return future
        self._mailbox.append((command, future, durable))
        self._wake()
        return future

    def cast(self, command: Callable[[QueueState, float], object]) -> None:
        """Queue ``command(state, now)`` without waiting for anything back."""
        if not self._closed:
            self._mailbox.append((command, None, False))
            self._wake()

    def apply_now(
        self, command: Callable[[QueueState, float], T]
    ) -> tuple[T, asyncio.Future[None] | None]:
        """Run ``command`` at once, in this turn of the loop, and drain the outboxes.

        For operations that must touch several queues in one journal batch
        (fan-out publish): asyncio runs no other task until this returns, and
        the actor only mutates its state between its own awaits, so ownership
        holds. Returns the result and the commit future of the ops written.
        """
        if self._closed:
            raise QueueDeleted(self.name)
        now = self._clock()
        result = command(self.state, now)
        commit = self._drain(now)
        # The actor may sleep on a timer armed before this command: let it
        # take a turn and re-arm for the deadlines just added (a delay).
        self._wake()
        return result, commit

    def add_consumer(
        self,
        consumer_id: int,
        prefetch: int,
        sink: DeliverySink,
        on_close: Callable[[], object] | None = None,
        label: str = "",
    ) -> asyncio.Future[None]:
        """Register a push consumer; deliveries go to ``sink``.

        ``on_close`` is called if the queue is deleted while the consumer is
        registered (its transport ends the subscription).
        """
        self._sinks[consumer_id] = sink
        if on_close is not None:
            self._closers[consumer_id] = on_close
        return self.call(
            lambda state, now: state.add_consumer(consumer_id, prefetch, label=label, now=now)
        )

    def remove_consumer(self, consumer_id: int) -> asyncio.Future[int]:
        """Forget a push consumer and requeue what it held."""

        def remove(state: QueueState, now: float) -> int:
            self._sinks.pop(consumer_id, None)
            self._closers.pop(consumer_id, None)
            return state.remove_consumer(consumer_id, now)

        return self.call(remove)

    async def pull(self, max_count: int, lease: float | None, wait: float) -> list[Entry]:
        """Lease up to ``max_count`` messages, waiting up to ``wait`` seconds for the first."""
        entries = await self.call(lambda state, now: state.pull(max_count, lease, now))
        if entries:
            return entries
        eager = wait <= 0
        if eager:
            state = self.state
            if state.paused(self._clock()) or (
                self._shared is None and (not state.pending_count or not state.pending.loading)
            ):
                # Nothing ready, or only messages their groups hold back.
                return entries
            # Ready messages whose bodies are still in storage (or, shared, that
            # only a claim can find): wait for the load or the claim's answer.
            wait = _LOAD_WAIT_S
        waiter: asyncio.Future[list[Entry]] = asyncio.get_running_loop().create_future()
        parked = (max_count, lease, waiter, eager)
        self._waiters.append(parked)
        self._wake()
        try:
            done, _ = await asyncio.wait({waiter}, timeout=wait)
        finally:
            # Timed out or the caller went away: leave nothing that would lease
            # messages to nobody, and nothing that piles up on an idle queue.
            if not waiter.done():
                waiter.cancel()
                with suppress(ValueError):
                    self._waiters.remove(parked)
        if not done:
            return []
        return waiter.result()

    # -- the loop ---------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        mailbox = self._mailbox
        while True:
            if not mailbox:
                if self._closed:
                    return
                self._wakeup = loop.create_future()
                self._arm_timer(loop)
                await self._wakeup
                self._wakeup = None
            now = self._clock()
            state = self.state
            durable: list[asyncio.Future[Any]] = []
            results: list[Any] = []
            while mailbox:
                command, future, is_durable = mailbox.popleft()
                try:
                    result = command(state, now)
                except Exception as exc:
                    if future is None:
                        logger.opt(exception=exc).error("queue command failed", queue=self.name)
                    elif not future.done():
                        future.set_exception(exc)
                    continue
                if future is None or future.done():
                    continue
                if is_durable:
                    durable.append(future)
                    results.append(result)
                else:
                    future.set_result(result)
            try:
                commit = self._drain(now)
            except Exception as exc:  # pragma: no cover - a bug in the state
                logger.opt(exception=exc).error("queue turn failed", queue=self.name)
                commit = None
            if durable:
                if commit is None:
                    # No ops of their own (a deduplicated publish): confirm
                    # once what was written before them has committed.
                    commit = self._journal.write([])
                self._resolve_after(commit, durable, results)

    def _drain(self, now: float) -> asyncio.Future[None] | None:
        """Apply deadlines, serve waiters and consumers, then flush every outbox."""
        state = self.state
        state.tick(now)
        waiters = self._waiters
        while waiters and state.pending_count:
            max_count, lease, waiter, _ = waiters[0]
            if waiter.done():
                waiters.popleft()
                continue
            entries = state.pull(max_count, lease, now)
            if not entries:
                break
            waiters.popleft()
            waiter.set_result(entries)
        state.dispatch(now)
        shared = self._shared
        if shared is not None:
            self._balance(shared)
        commit = None
        ops = state.take_ops()
        if ops:
            recorded = self._hooks.history(self.name, ops, now)
            # On shared storage the claim recorded the deliveries already.
            written = ops if shared is None else [op for op in ops if type(op) is not DeliverOp]
            if recorded is not None:
                # The batch's own history joins it: same commit, no write of its own.
                written.append(recorded)
            commit = self._journal.write(written) if written else None
            if commit is not None:
                commit.add_done_callback(partial(self._check_commit, ops))
            self._hooks.ops_written(self.name, ops)
        dead = state.take_dead_letters()
        if dead:
            by_target: dict[str, list[Item]] = {}
            for target, item in dead:
                by_target.setdefault(target, []).append(item)
            for target, items in by_target.items():
                self._hooks.dead_letter(target, items)
        loads = state.take_loads()
        if loads:
            self._loader = asyncio.get_running_loop().create_task(self._load(loads))
        # Push last: the DeliverOp ops are journaled (and indexed by the broker)
        # before a consumer can ack, and a failing sink can't skip the write.
        deliveries = state.take_deliveries()
        if deliveries:
            self._push(deliveries)
        return commit

    def _check_commit(self, ops: list[Op], commit: asyncio.Future[None]) -> None:
        """A failed batch withdrew its publishes (`journal.Journal.write`): so must the queues."""
        if commit.cancelled() or commit.exception() is None:
            return
        entries = [op.entry for op in ops if type(op) is Insert]
        if entries:
            self._hooks.withdrawn(self.name, entries)

    def _balance(self, state: SharedQueueState) -> None:
        waiters = self._waiters
        state.balance(sum(w[0] for w in waiters if not w[2].done()))
        count = state.take_claims()
        if count:
            self._claimer = asyncio.get_running_loop().create_task(self._run_claim(count))
        elif not state.claiming and waiters:
            # No claim on its way: a pull that takes "nothing now" has its answer.
            for waiter in [w for w in waiters if w[3]]:
                waiters.remove(waiter)
                if not waiter[2].done():
                    waiter[2].set_result([])

    async def _run_claim(self, count: int) -> None:
        assert self._claim is not None, "a shared state's actor is given its claim"
        shared = self._shared
        assert shared is not None, "claims are a shared state's"
        # Stopped meanwhile: what was claimed goes back when the node leaves (or is deleted).
        await self._fetch(
            "claiming messages",
            self._claim(
                self.name,
                count,
                self._clock(),
                shared.options.lease,
                shared.options.group_concurrency,
            ),
            lambda _, entries: shared.claimed(entries, count),
            lambda _: shared.claim_failed(),
        )

    def _push(self, deliveries: list[tuple[int, Entry]]) -> None:
        if len(deliveries) == 1:
            consumer_id, entry = deliveries[0]
            self._send(consumer_id, [entry])
            return
        grouped: dict[int, list[Entry]] = {}
        for consumer_id, entry in deliveries:
            group = grouped.get(consumer_id)
            if group is None:
                grouped[consumer_id] = [entry]
            else:
                group.append(entry)
        for consumer_id, entries in grouped.items():
            self._send(consumer_id, entries)

    def _send(self, consumer_id: int, entries: list[Entry]) -> None:
        try:
            self._sinks[consumer_id](self.name, entries)
        except Exception as exc:
            # A transport bug: what it was handed stays leased and comes back
            # when the lease expires or the consumer is removed.
            logger.opt(exception=exc).error(
                "delivery sink failed", queue=self.name, consumer=consumer_id
            )

    @staticmethod
    def _resolve_after(
        commit: asyncio.Future[None] | None,
        futures: list[asyncio.Future[Any]],
        results: list[Any],
    ) -> None:
        def resolve(done: asyncio.Future[None] | None) -> None:
            error = None if done is None or done.cancelled() else done.exception()
            for future, result in zip(futures, results, strict=True):
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result)

        if commit is None:
            resolve(None)
        else:
            commit.add_done_callback(resolve)

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = self.state.next_deadline()
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_at == deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = loop.call_later(max(0.0, deadline - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()

    async def _load(self, ids: list[int]) -> None:
        await self._fetch(
            "loading bodies",
            self._journal.load_entries(ids),
            lambda state, entries: state.hydrate(entries, ids),
            lambda state: state.hydrate_failed(),
        )

    async def _fetch(
        self,
        what: str,
        read: Awaitable[list[Entry]],
        done: Callable[[QueueState, list[Entry]], None],
        failed: Callable[[QueueState], None],
    ) -> None:
        """Await a storage read the state asked for; hand it the answer in a later turn.

        A failed read is told after a pause, so that the state's next ask
        doesn't hammer a storage that is down.
        """
        try:
            entries = await read
        except Exception as exc:
            logger.opt(exception=exc).warning(f"{what} failed", queue=self.name)
            await asyncio.sleep(_RETRY_PAUSE_S)
            self.cast(lambda state, now: failed(state))
            return
        self.cast(lambda state, now: done(state, entries))

"""`Session`: what the frames of one authenticated ``/ws`` connection do with the broker.

A `Connection` (its loops, send buffer and close) around a `WsProtocol` (its
bookkeeping and answers, without I/O); the session adds the calls to the
broker and the rights behind them:

* Publishes never await: `Broker.publish_each_nowait` returns the commit
  future, whose done-callback has the protocol answer ``confirm``; many
  publishes are in flight at once and confirms leave in commit order.
* Each `WsConsumer` is the `DeliverySink` of one consumer: the queue's actor
  calls `Session.deliver` synchronously with the messages it leased, and the
  protocol encodes ``deliver`` frames that go straight into the send buffer.
* Acks, nacks and touches claim their tags from the protocol's `Consumers`
  and settle what they name with the broker.

Rights are checked continuously (DESIGN.md, "Trust"): the session follows
its user (`Accounts.follow`). When a permission is removed, each subscription
the user may no longer hold ends with ``unsubscribed {reason: "revoked"}``,
what it held is requeued and its tags answer ``error {code: "revoked"}``; when
the user is deleted or disabled or its password changes, the connection is
closed with 4003 (what it held is requeued, what was buffered is dropped).
The access token's expiry closes it with 4001 unless an ``auth`` frame
renewed it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from broker_core.auth import Action, InvalidToken, allowed, revocation_reason
from broker_core.errors import QueueNotFound
from broker_core.history import acting
from broker_core.permissions import require
from broker_core.topic_messages import TopicPublishRequest
from broker_core.topic_registry import publish_fields, require_topic

from ..decoding import fail_undeliverable
from ..errors import ApiError, classify
from ..logging import current_request_id
from ..operations import (
    capped_lease,
    check_content,
    check_headers,
    check_prefetch,
    check_subscriptions,
)
from ..rest.results import ack_result_value
from ..wire import Ack, Auth, Nack, Publish, Subscribe, Touch, Unsubscribe
from .connection import CLOSE_EXPIRED, CLOSE_POLICY, CLOSE_REVOKED, Connection
from .protocol import CLOSED, OPEN, WsProtocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker_core.auth import Claims, User
    from broker_core.errors import BrokerError
    from broker_core.messages import Entry
    from broker_core.queue import Published
    from broker_core.topic_messages import TopicPublishResult

    from ..context import BrokerContext
    from ..wire import ClientFrame, ClientOne, Ref
    from .codec import Codec
    from .consumers import WsConsumer
    from .direct import DirectSocket

__all__ = ["Session", "authenticate"]

_TARGET = "a publish names a queue, or a topic and a routing_key"
_RATE_STRIKES = 100
"""Publishes refused in a row for the rate limit before the connection is closed."""


def authenticate(ctx: BrokerContext, token: str) -> tuple[User, Claims]:
    """The user and verified claims of an access token (or a service token).

    Raises:
        InvalidToken: the token is invalid, expired, or no longer speaks for its user.
    """
    return ctx.accounts.verify(token)


class Session(Connection):
    """One authenticated connection: run `run` until the client goes away.

    ``inflight``, ``peak_inflight``, ``buffered``, ``peak_buffered`` and
    ``subscriptions`` are gauges for observability (and tests).

    Args:
        send: the ASGI ``send`` of the connection (already accepted).
        receive: its ASGI ``receive``.
        ctx: the broker's context.
        codec: the frame format the client chose.
        user: who the connection speaks for.
        claims: the claims of its access token (for expiry and revocation).
        batch: the client asked for ``batch`` frames: what is buffered leaves
            as one WebSocket message (up to `BATCH_BYTES`) instead of one each.
        direct: the server's short data path (`transports.ws.direct`), if any.
    """

    def __init__(
        self,
        send: Callable[[Any], Awaitable[None]],
        receive: Callable[[], Awaitable[Any]],
        ctx: BrokerContext,
        codec: Codec,
        user: User,
        claims: Claims,
        *,
        batch: bool = False,
        direct: DirectSocket | None = None,
    ) -> None:
        # Deliveries and failures are logged from queues' tasks too: bind the
        # id of the upgrade request, which those tasks don't serve.
        request_id = current_request_id()
        log = logger.bind(
            user=user.username, **({} if request_id is None else {"request_id": request_id})
        )
        protocol = WsProtocol(codec, ctx.broker.leases)
        super().__init__(
            send, receive, codec, protocol, ctx.settings, log, batch=batch, direct=direct
        )
        self._ctx = ctx
        self._broker = ctx.broker
        self._consumers = protocol.consumers
        self.user = user
        self._claims = claims
        self._strikes = 0
        self._can_publish: dict[str, bool] = {}
        self._release: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._revoking: set[asyncio.Task[None]] = set()
        self._topic_publishes: set[asyncio.Task[TopicPublishResult]] = set()
        self._held: list[Publish] = []
        self._held_acks: list[tuple[Ref | None, dict[WsConsumer, dict[int, int]], list[int]]] = []

    # -- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until the client or the server closes it; then requeue."""
        self._arm_expiry()
        accounts = self._ctx.accounts
        username = self.user.username
        # This task publishes the connection's frames: its history says who, over ws.
        acting("ws", username)
        accounts.follow(username, self.user_changed)
        writer = self._start_writer()
        try:
            # Changed between authentication and now: act on it as on any change.
            self.user_changed(accounts.get(username))
            await self._read_loop()
        finally:
            self._protocol.connection_lost()
            accounts.unfollow(username, self.user_changed)
            if self._expiry is not None:
                self._expiry.cancel()
            await self._stop_writer(writer)
            if self._release is not None:
                await self._release
            for task in list(self._revoking):
                await task
            await self._release_all()
            self._buffer.clear()

    @property
    def subscriptions(self) -> int:
        """Live subscriptions."""
        return len(self._consumers)

    def _closing_started(self) -> None:
        if self._consumers:
            self._release = self._loop.create_task(self._release_all())

    async def _release_all(self) -> None:
        for consumer in self._consumers.take_all():
            if consumer.consumer_id is not None:
                with suppress(Exception):
                    await self._broker.unsubscribe(consumer.queue, consumer.consumer_id)

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, self._claims.exp - time.time())
        self._expiry = self._loop.call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        self.close(CLOSE_EXPIRED, "access token expired; send an auth frame with a fresh one")

    async def _handle_batch(self, frames: list[ClientOne]) -> None:
        """Handle a batch's frames in order; consecutive publishes to a queue go as one group."""
        group: list[Publish] = []
        for one in frames:
            if self.closing:
                break  # as for frames that come after the close
            if type(one) is Publish and one.topic is None:
                if group and group[0].queue != one.queue:
                    self._publish_group(group)
                    group = []
                try:
                    group.append(self._checked(one))
                except Exception as exc:
                    self._fail(one.ref, exc)
                continue
            if group:
                self._publish_group(group)
                group = []
            await self._handle(one)
        if group:
            self._publish_group(group)

    def _hold(self, frame: ClientFrame) -> bool:
        kind = type(frame)
        if kind is Publish and not self._held_acks:
            assert isinstance(frame, Publish)
            if frame.topic is not None:
                return False
            held = self._held
            if held and held[0].queue != frame.queue:
                self._flush_publishes()
            try:
                self._held.append(self._checked(frame))
                self._held_publishes += 1
            except Exception as exc:
                self._fail(frame.ref, exc)
            return True
        if kind is Ack and not self._held:
            assert isinstance(frame, Ack)
            if frame.result is not None:
                return False
            try:
                self._current_user()
                tags = frame.tags
                if self._consumers.revoked:
                    tags = self._protocol.refuse_revoked(tags, frame.ref, forget=True)
                    self._send_out()
                groups, bad = self._consumers.claim(tags, keep=False)
            except Exception as exc:
                self._fail(frame.ref, exc)
                return True
            self._held_acks.append((frame.ref, groups, bad))
            return True
        return False

    def _flush_publishes(self) -> None:
        held, self._held = self._held, []
        self._held_publishes = 0
        if held:
            self._publish_group(held)

    async def _flush_held(self) -> None:
        if self._held:
            self._flush_publishes()
        if self._held_acks:
            frames, self._held_acks = self._held_acks, []
            try:
                await self._ack_held(frames)
            except Exception as exc:
                self._fail(frames[0][0], exc)

    async def _ack_held(
        self, frames: list[tuple[Ref | None, dict[WsConsumer, dict[int, int]], list[int]]]
    ) -> None:
        """Ack what consecutive ``ack`` frames claimed: one broker call per subscription.

        Each frame's unknown tags are still answered in an error frame of
        its own, with its ``ref``, as `_settle` answers one frame.
        """
        merged: dict[WsConsumer, dict[int, int]] = {}
        frame_of: dict[int, int] = {}
        for index, (_, groups, _) in enumerate(frames):
            for consumer, by_id in groups.items():
                merged.setdefault(consumer, {}).update(by_id)
                for tag in by_id.values():
                    frame_of[tag] = index
        broker = self._broker
        for consumer, by_id in merged.items():
            assert consumer.consumer_id is not None, "a delivering subscription has a consumer"
            ids = list(by_id)
            if self._ctx.tracing is not None:
                self._ctx.tracing.settled(ids, "ack")
            try:
                outcome = await broker.results.settle_with(
                    ids,
                    None,
                    functools.partial(
                        broker.consumer_ack, consumer.queue, consumer.consumer_id, ids
                    ),
                )
            except Exception as exc:
                if classify(exc).status >= 500:
                    raise
                failed = list(by_id.values())
            else:
                failed = [by_id[id] for id in outcome.errors]
            for tag in failed:
                frames[frame_of[tag]][2].append(tag)
        for ref, _, bad in frames:
            if bad:
                self._protocol.unknown_tags(ref, bad)
                self._send_out()

    async def _handle(self, frame: ClientOne) -> None:
        try:
            match frame:
                case Publish(topic=None):
                    self._publish(frame)
                case Publish():
                    self._publish_topic(frame)
                case Ack(tags=tags, ref=ref, result=result):
                    await self._settle(tags, ref, None, ack_result_value(self._broker, result))
                case Nack(tags=tags, ref=ref, requeue=requeue, reason=reason, delay_ms=delay):
                    await self._settle(tags, ref, (requeue, reason, delay))
                case Subscribe():
                    await self._subscribe(frame)
                case Unsubscribe():
                    await self._unsubscribe(frame)
                case Touch():
                    await self._touch(frame)
                case Auth():
                    self._reauthenticate(frame)
        except Exception as exc:
            self._fail(frame.ref, exc)

    def _current_user(self) -> User:
        """The connection's user as it is now; closes (4003) if its token was revoked."""
        user = self._ctx.accounts.get(self.user.username)
        if user is not self.user:
            reason = revocation_reason(user, self._claims)
            self.user_changed(user)
            if reason is not None:
                raise ApiError(401, "token_revoked", f"token revoked: {reason}")
        return self.user

    # -- rights ---------------------------------------------------------------------

    def user_changed(self, user: User | None) -> None:
        """Apply a change of the connection's user (`Accounts.follow`; never raises, never awaits).

        A user gone, disabled or with a new password closes the connection
        with 4003, dropping what is buffered; otherwise each subscription on
        a queue the user may no longer consume ends as revoked.
        """
        if self._closing is not None or self._protocol.state is not OPEN:
            return
        reason = revocation_reason(user, self._claims)
        if reason is not None:
            self.close(CLOSE_REVOKED, f"revoked: {reason}", flush=False)
            return
        assert user is not None, "a user with a current token exists"
        self.user = user
        self._can_publish.clear()
        for consumer in list(self._consumers.live.values()):
            if not allowed(user, Action.CONSUME, consumer.queue):
                self._revoke(consumer)

    def _revoke(self, consumer: WsConsumer) -> None:
        """End ``consumer``: deliveries stop now, its tags are refused, its consumer is removed."""
        self._consumers.revoke(consumer)
        self._log.info("subscription revoked", queue=consumer.queue, subscription=consumer.id)
        if consumer.consumer_id is None:
            return  # still subscribing: `_subscribe` removes the consumer and answers revoked
        task = self._loop.create_task(self._end_revoked(consumer, consumer.consumer_id))
        self._revoking.add(task)
        task.add_done_callback(self._revoking.discard)

    async def _end_revoked(self, consumer: WsConsumer, consumer_id: int) -> None:
        try:
            requeued = await self._broker.unsubscribe(consumer.queue, consumer_id)
        except Exception as exc:
            self.internal_error(exc)
            return
        if self._closing is None:
            self._protocol.revoked(consumer, requeued)
            self._send_out()

    # -- publish --------------------------------------------------------------------

    def _publish(self, frame: Publish) -> None:
        self._publish_group([self._checked(frame)])

    def _checked(self, frame: Publish) -> Publish:
        """``frame`` as it will be published, once the caller may and it fits; else raise."""
        user = self._current_user()
        queue = frame.queue
        if queue is None or frame.routing_key is not None:
            raise ApiError(422, "invalid", _TARGET)
        permitted = self._can_publish.get(queue)
        if permitted is None:
            permitted = self._can_publish[queue] = allowed(user, Action.PUBLISH, queue)
        if not permitted:
            require(user, Action.PUBLISH, queue)
        return self._fits(user, frame)

    def _fits(self, user: User, frame: Publish) -> Publish:
        """``frame`` once it passes the rate limit and the size rules; else raise."""
        limiter = self._ctx.limits.publish
        if limiter.enabled:
            wait = limiter.hit(user.username, time.monotonic())
            if wait > 0:
                self._strikes += 1
                if self._strikes >= _RATE_STRIKES:
                    self.close(CLOSE_POLICY, "publish rate limit exceeded repeatedly")
                raise ApiError(429, "rate_limited", f"rate limit exceeded; retry in {wait:.3f} s")
            self._strikes = 0
        settings = self._settings
        check_headers(settings, frame.headers)
        content = self._codec.content_in(frame.content, settings.max_json_depth)
        check_content(settings, content)
        if content is not frame.content:
            frame = msgspec.structs.replace(frame, content=content)
        return frame

    def _publish_group(self, frames: list[Publish]) -> None:
        """Publish checked frames to their (one) queue; each is confirmed or fails on its own."""
        refs = [frame.ref for frame in frames]
        queue = frames[0].queue or ""
        try:
            future = self._broker.publish_each_nowait(queue, frames)
        except Exception as exc:
            for ref in refs:
                self._fail(ref, exc)
            return
        self._protocol.published(len(frames))
        future.add_done_callback(functools.partial(self._confirm, refs))
        if self._ctx.tracing is not None:
            future.add_done_callback(functools.partial(self._traced, queue, frames, time.time_ns()))

    def _traced(
        self,
        queue: str,
        frames: list[Publish],
        started_ns: int,
        future: asyncio.Future[list[Published | BrokerError]],
    ) -> None:
        """Record the ``publish`` spans of the traced frames that were stored."""
        if future.cancelled() or future.exception() is not None or self._ctx.tracing is None:
            return
        ids = [o.id if not isinstance(o, BaseException) else None for o in future.result()]
        self._ctx.tracing.published(queue, frames, ids, started_ns, "websocket")

    def _publish_topic(self, frame: Publish) -> None:
        """Publish to a topic's bound queues; confirmed (with ``routed``) after the one commit."""
        user = self._current_user()
        topic, key = frame.topic, frame.routing_key
        if topic is None or key is None or frame.queue is not None:
            raise ApiError(422, "invalid", _TARGET)
        require_topic(user, Action.PUBLISH, topic)
        frame = self._fits(user, frame)
        request = TopicPublishRequest(**publish_fields(frame), routing_key=key)
        task = self._loop.create_task(self._ctx.topics.publish(topic, request, user))
        # Held here: the loop keeps only a weak reference to a task.
        self._topic_publishes.add(task)
        task.add_done_callback(self._topic_publishes.discard)
        self._protocol.published(1)
        task.add_done_callback(functools.partial(self._routed, frame.ref))

    def _routed(self, ref: Ref, future: asyncio.Task[TopicPublishResult]) -> None:
        outcome = (
            asyncio.CancelledError()
            if future.cancelled()
            else (future.exception() or future.result())
        )
        if not self._protocol.routed(ref, outcome):
            assert isinstance(outcome, BaseException), "only an error goes unanswered"
            self.internal_error(outcome)
        if self._protocol.state is CLOSED:
            return
        self._send_out()
        if self._reader_wakeup is not None:
            self._wake_reader()

    def _confirm(
        self, refs: list[Ref], future: asyncio.Future[list[Published | BrokerError]]
    ) -> None:
        if future.cancelled():
            outcome: list[Published | BrokerError] | BaseException = asyncio.CancelledError()
        else:
            outcome = future.exception() or future.result()
        unexpected = self._protocol.confirmed(refs, outcome)
        if unexpected is not None:
            for exc in unexpected:
                self.internal_error(exc)
        if self._protocol.state is CLOSED:
            return
        self._send_out()
        if self._reader_wakeup is not None:
            self._wake_reader()

    # -- subscriptions --------------------------------------------------------------

    async def _subscribe(self, frame: Subscribe) -> None:
        consumers = self._consumers
        check_subscriptions(self._settings, len(consumers))
        check_prefetch(self._settings, frame.prefetch)
        require(self._current_user(), Action.CONSUME, frame.queue)
        consumer = consumers.add(self, frame.queue, frame.prefetch)
        try:
            consumer.consumer_id = await self._broker.subscribe(
                frame.queue,
                frame.prefetch,
                consumer,
                consumer.queue_deleted,
                label=f"ws {self._current_user().username}",
            )
        except BaseException:
            consumers.discard(consumer)
            raise
        if self._closing is not None or self._protocol.state is not OPEN:
            consumers.discard(consumer)
            await self._broker.unsubscribe(consumer.queue, consumer.consumer_id)
            return
        if not consumers.is_live(consumer):
            if consumer.ended == "revoked":  # the right to consume was removed meanwhile
                await self._broker.unsubscribe(consumer.queue, consumer.consumer_id)
                raise ApiError(
                    403, "revoked", f"consume on queue {consumer.queue!r} is no longer allowed"
                )
            raise QueueNotFound(frame.queue)  # the queue was deleted meanwhile
        self._protocol.subscribed(consumer, frame.ref)
        self._send_out()
        self._log.debug("subscribed", queue=consumer.queue, subscription=consumer.id)

    async def _unsubscribe(self, frame: Unsubscribe) -> None:
        consumer = self._consumers.remove(frame.subscription)
        if consumer is None:
            raise ApiError(
                404, "subscription_not_found", f"no subscription {frame.subscription} here"
            )
        assert consumer.consumer_id is not None, "live subscriptions have a consumer"
        requeued = await self._broker.unsubscribe(consumer.queue, consumer.consumer_id)
        self._protocol.unsubscribed(consumer, requeued, frame.ref)
        self._send_out()

    def end_subscription(self, consumer: WsConsumer, reason: str) -> None:
        """Forget a subscription the server ended, and tell the client why."""
        self._protocol.end(consumer, reason)
        self._send_out()

    def deliver(self, consumer: WsConsumer, entries: list[Entry]) -> None:
        """Send deliveries to ``consumer`` (called by the queue's actor, in its turn)."""
        undeliverable = self._protocol.deliver(consumer, entries)
        self._send_out()
        tracing = self._ctx.tracing
        if tracing is not None:
            tracing.delivered(
                consumer.queue, ((e.id, e.headers, e.attempt) for e in entries), "websocket"
            )
        if undeliverable is not None:
            # Failed, not sent: one poison message must not end the session (and
            # requeue it at the head again for the next consumer to die on).
            task = self._loop.create_task(
                fail_undeliverable(self._broker, consumer.queue, undeliverable)
            )
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)

    # -- settlement -----------------------------------------------------------------

    async def _settle(
        self,
        tags: list[int],
        ref: Ref | None,
        nack: tuple[bool, str | None, int | None] | None,
        result: bytes | None = None,
    ) -> None:
        self._current_user()
        protocol = self._protocol
        consumers = self._consumers
        if consumers.revoked:
            tags = protocol.refuse_revoked(tags, ref, forget=True)
            self._send_out()
        groups, bad = consumers.claim(tags, keep=False)
        broker = self._broker
        for consumer, by_id in groups.items():
            assert consumer.consumer_id is not None, "a delivering subscription has a consumer"
            ids = list(by_id)
            if self._ctx.tracing is not None:
                self._ctx.tracing.settled(ids, "ack" if nack is None else "nack")
            try:
                if nack is None:
                    outcome = await broker.results.settle_with(
                        ids,
                        result,
                        functools.partial(
                            broker.consumer_ack, consumer.queue, consumer.consumer_id, ids
                        ),
                    )
                else:
                    requeue, reason, delay_ms = nack
                    outcome = await broker.consumer_nack(
                        consumer.queue, consumer.consumer_id, ids, requeue, reason, delay_ms
                    )
            except Exception as exc:
                if classify(exc).status >= 500:
                    raise
                bad.extend(by_id.values())
                continue
            bad.extend(by_id[id] for id in outcome.errors)
        if bad:
            protocol.unknown_tags(ref, bad)
            self._send_out()

    async def _touch(self, frame: Touch) -> None:
        self._current_user()
        protocol = self._protocol
        consumers = self._consumers
        tags = frame.tags
        if consumers.revoked:
            tags = protocol.refuse_revoked(tags, frame.ref, forget=False)
            self._send_out()
        groups, bad = consumers.claim(tags, keep=True)
        lease = capped_lease(self._settings, frame.lease)
        for consumer, by_id in groups.items():
            queue = consumer.queue
            for id, tag in by_id.items():
                try:
                    await self._broker.touch(id, lease, allowed=queue.__eq__)
                except Exception as exc:
                    if classify(exc).status >= 500:
                        raise
                    bad.append(tag)
        if bad:
            protocol.unknown_tags(frame.ref, bad)
            self._send_out()

    # -- auth -----------------------------------------------------------------------

    def _reauthenticate(self, frame: Auth) -> None:
        try:
            user, claims = authenticate(self._ctx, frame.token)
        except InvalidToken as exc:
            raise ApiError(401, "unauthorized", exc.reason) from None
        if user.username != self.user.username:
            raise ApiError(403, "forbidden", "a connection cannot change its user")
        self.user, self._claims = user, claims
        self._can_publish.clear()
        self._arm_expiry()
        self._protocol.authenticated(user.username, claims.exp, frame.ref, time.time())
        self._send_out()

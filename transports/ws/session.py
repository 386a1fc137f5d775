"""`Session`: the I/O shell of one authenticated WebSocket connection, its loops and its buffer.

What the connection answers, and the bookkeeping behind it (subscriptions,
delivery tags, revoked tags, publishes in flight), is `WsProtocol`, which does
no I/O; the session owns what does:

* The **reader** (the endpoint's task) decodes client frames and dispatches
  them with ``match``, awaiting the broker where a frame needs it. Publishes
  never await: `Broker.publish_each_nowait` returns the commit future, whose
  done-callback has the protocol answer ``confirm``; many publishes are in
  flight at once and confirms leave in commit order.
* Each `WsConsumer` is the `DeliverySink` of one consumer: the queue's actor
  calls `Session.deliver` synchronously with the messages it leased, and the
  protocol encodes ``deliver`` frames that go straight into the send buffer.
* The **writer** task drains the send buffer into the socket, one WebSocket
  message per frame (or one ``batch`` of them).

Backpressure: the reader stops reading (so the client's TCP window closes)
while the send buffer holds ``ws_send_buffer_messages`` frames or
`_PAUSE_BYTES`, or as many publishes are unconfirmed. A client that stops
reading therefore stops acking, its subscriptions run out of credit and the
buffer stays bounded by its prefetch; one that stays behind longer than the
heartbeat misses its pong and is disconnected by the server (1011). Past
`_MAX_BYTES` buffered the connection is closed at once (1008).

Rights are checked continuously (DESIGN.md, "Trust"): the session follows
its user (`Accounts.follow`). When a permission is removed, each subscription
the user may no longer hold ends with ``unsubscribed {reason: "revoked"}``,
what it held is requeued and its tags answer ``error {code: "revoked"}``; when
the user is deleted or disabled or its password changes, the connection is
closed with 4003 (what it held is requeued, what was buffered is dropped).

Close codes: 1008 policy (rate limit, slow consumer), 4001 access token
expired, 4003 revoked (user deleted, disabled, password changed), 1009 frame
too big, 1011 internal error.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from broker_core.auth import Action, InvalidToken, TokenType, allowed, revocation_reason
from broker_core.errors import QueueNotFound
from broker_core.frames import (
    BATCH_BYTES,
    CLIENT_OPS,
    Ack,
    Auth,
    ClientBatch,
    Nack,
    Publish,
    Subscribe,
    Touch,
    Unsubscribe,
    peek,
)

from ..decoding import fail_undeliverable
from ..errors import ApiError, InvalidInput, classify, last_error
from ..logging import current_request_id
from ..security import require
from .protocol import State, WsProtocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker_core.auth import Claims, User
    from broker_core.errors import BrokerError
    from broker_core.frames import ClientOne, Ref
    from broker_core.messages import Entry
    from broker_core.queue import Published

    from ..context import BrokerContext
    from .codec import Codec
    from .consumers import WsConsumer

__all__ = [
    "CLOSE_EXPIRED",
    "CLOSE_INTERNAL",
    "CLOSE_POLICY",
    "CLOSE_REVOKED",
    "CLOSE_TOO_BIG",
    "Session",
    "authenticate",
]

CLOSE_POLICY = 1008
"""Authentication failed, rate limit abused, or a slow consumer."""
CLOSE_REVOKED = 4003
"""The user was deleted or disabled, or its password changed (its token is revoked)."""
CLOSE_TOO_BIG = 1009
"""A frame passed ``ws_max_frame_bytes`` (uvicorn enforces it too)."""
CLOSE_INTERNAL = 1011
"""An unexpected server error; it is logged with its traceback."""
CLOSE_EXPIRED = 4001
"""The access token expired and no ``auth`` frame renewed it."""

_PAUSE_BYTES = 8 << 20
"""Buffered bytes past which the reader stops reading client frames."""
_MAX_BYTES = 64 << 20
"""Buffered bytes past which the connection is closed as a slow consumer."""
_RATE_STRIKES = 100
"""Publishes refused in a row for the rate limit before the connection is closed."""


def authenticate(ctx: BrokerContext, token: str) -> tuple[User, Claims]:
    """The user and verified claims of an access token.

    Raises:
        InvalidToken: the token is invalid, expired, or no longer speaks for its user.
    """
    claims = ctx.accounts.tokens.verify(token, TokenType.ACCESS)
    return ctx.accounts.authenticate(token), claims


class Session:
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
    ) -> None:
        self._send = send
        self._batch = batch
        self._receive = receive
        self._ctx = ctx
        self._broker = ctx.broker
        self._settings = settings = ctx.settings
        self._codec = codec
        self._protocol = protocol = WsProtocol(codec, self._broker.leases)
        self._consumers = protocol.consumers
        self.user = user
        self._claims = claims
        self._loop = asyncio.get_running_loop()
        # Deliveries and failures are logged from queues' tasks too: bind the
        # id of the upgrade request, which those tasks don't serve.
        request_id = current_request_id()
        self._log = logger.bind(
            user=user.username, **({} if request_id is None else {"request_id": request_id})
        )
        self._buffer: deque[str | bytes] = deque()
        self._buffered_bytes = 0
        self._buffer_limit = settings.ws_send_buffer_messages
        self._max_inflight = settings.ws_send_buffer_messages
        self._writer_wakeup: asyncio.Future[None] | None = None
        self._reader_wakeup: asyncio.Future[None] | None = None
        self.peak_buffered = 0
        self._strikes = 0
        self._can_publish: dict[str, bool] = {}
        self._closing: tuple[int, str] | None = None
        self._flush_on_close = True
        self._release: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._revoking: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until the client or the server closes it; then requeue."""
        self._arm_expiry()
        accounts = self._ctx.accounts
        username = self.user.username
        accounts.follow(username, self.user_changed)
        writer = self._loop.create_task(self._write_loop(), name="ws-writer")
        try:
            # Changed between authentication and now: act on it as on any change.
            self.user_changed(accounts.get(username))
            await self._read_loop()
        finally:
            self._protocol.connection_lost()
            accounts.unfollow(username, self.user_changed)
            if self._expiry is not None:
                self._expiry.cancel()
            if not writer.done():
                writer.cancel()
            with suppress(asyncio.CancelledError):
                await writer
            if self._release is not None:
                await self._release
            for task in list(self._revoking):
                await task
            await self._release_all()
            self._buffer.clear()

    @property
    def closing(self) -> bool:
        """Whether the session is closing (frames that come now are dropped)."""
        return self._closing is not None

    @property
    def buffered(self) -> int:
        """Frames waiting in the send buffer."""
        return len(self._buffer)

    @property
    def subscriptions(self) -> int:
        """Live subscriptions."""
        return len(self._consumers)

    @property
    def inflight(self) -> int:
        """Publishes sent to the broker and not confirmed yet."""
        return self._protocol.inflight

    @property
    def peak_inflight(self) -> int:
        """The most publishes that were in flight at once."""
        return self._protocol.peak_inflight

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close the connection with ``code`` and ``reason``; requeue what it holds now.

        With ``flush``, buffered frames are sent first, and the confirms (or
        errors) of publishes in flight: a client told its publish is committed
        won't send it again.
        """
        protocol = self._protocol
        if self._closing is not None or protocol.state is State.CLOSED:
            return
        self._closing = (code, reason)
        self._flush_on_close = flush
        protocol.close(flush)
        self._log.info("websocket closing", code=code, reason=reason)
        if not flush:
            self._buffer.clear()
            self._buffered_bytes = 0
        if self._consumers:
            self._release = self._loop.create_task(self._release_all())
        self._wake_writer()
        self._wake_reader()

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

    # -- writer ---------------------------------------------------------------------

    def _send_out(self) -> None:
        """Move what the protocol answered into the send buffer, and wake the writer."""
        frames = self._protocol.data_to_send()
        if not frames:
            return
        buffer = self._buffer
        buffer.extend(frames)
        self._buffered_bytes += sum(map(len, frames))
        if len(buffer) > self.peak_buffered:
            self.peak_buffered = len(buffer)
        waiter = self._writer_wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._buffered_bytes > _MAX_BYTES:
            self.close(CLOSE_POLICY, "slow consumer: send buffer limit exceeded", flush=False)

    def _wake_writer(self) -> None:
        waiter = self._writer_wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _take(self) -> str | bytes:
        """The next WebSocket message to send: one frame, or a batch of what is buffered."""
        buffer = self._buffer
        data = buffer.popleft()
        size = len(data)
        if self._batch and buffer and size < BATCH_BYTES:
            frames = [data]
            while buffer and size < BATCH_BYTES:
                data = buffer.popleft()
                frames.append(data)
                size += len(data)
            self._buffered_bytes -= size
            return self._codec.join(frames)
        self._buffered_bytes -= size
        return data

    async def _write_loop(self) -> None:
        send = self._send
        buffer = self._buffer
        protocol = self._protocol
        kind = "bytes" if self._codec.binary else "text"
        try:
            while True:
                while buffer:
                    data = self._take()
                    await send({"type": "websocket.send", kind: data})
                    if self._reader_wakeup is not None:
                        self._wake_reader()
                if self._closing is not None and (
                    protocol.inflight == 0 or not self._flush_on_close
                ):
                    code, reason = self._closing
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return
                self._writer_wakeup = self._loop.create_future()
                await self._writer_wakeup
                self._writer_wakeup = None
        except Exception as exc:
            # The client went away mid-send: the reader sees the disconnect.
            self._log.debug("websocket send failed", error=repr(exc))
            protocol.connection_lost()
            self._wake_reader()

    # -- reader ---------------------------------------------------------------------

    def _must_pause(self) -> bool:
        protocol = self._protocol
        return protocol.state is State.OPEN and (
            len(self._buffer) >= self._buffer_limit
            or self._buffered_bytes >= _PAUSE_BYTES
            or protocol.inflight >= self._max_inflight
        )

    def _wake_reader(self) -> None:
        waiter = self._reader_wakeup
        if waiter is not None and not waiter.done() and not self._must_pause():
            waiter.set_result(None)

    async def _read_loop(self) -> None:
        receive = self._receive
        max_bytes = self._settings.ws_max_frame_bytes
        while True:
            while self._must_pause():
                self._reader_wakeup = self._loop.create_future()
                await self._reader_wakeup
                self._reader_wakeup = None
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            if self._closing is not None:
                continue  # draining until the close handshake completes
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if len(data) > max_bytes:
                self.close(CLOSE_TOO_BIG, f"frame over {max_bytes} bytes", flush=False)
                continue
            try:
                frame = self._codec.decode(data, self._settings.max_json_depth)
            except (msgspec.DecodeError, InvalidInput) as exc:
                self._bad_frame(data, exc)
                continue
            if isinstance(frame, ClientBatch):
                await self._handle_batch(frame.frames)
            else:
                await self._handle(frame)

    async def _handle_batch(self, frames: list[ClientOne]) -> None:
        """Handle a batch's frames in order; consecutive publishes to a queue go as one group."""
        group: list[Publish] = []
        for one in frames:
            if self.closing:
                break  # as for frames that come after the close
            if type(one) is Publish:
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

    async def _handle(self, frame: ClientOne) -> None:
        try:
            match frame:
                case Publish():
                    self._publish(frame)
                case Ack(tags=tags, ref=ref):
                    await self._settle(tags, ref, None)
                case Nack(tags=tags, ref=ref, requeue=requeue, reason=reason):
                    await self._settle(tags, ref, (requeue, reason))
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

    def _bad_frame(self, data: str | bytes, exc: msgspec.DecodeError | InvalidInput) -> None:
        op, ref = peek(data, self._codec.binary)
        error: Exception = exc
        if isinstance(exc, msgspec.ValidationError):
            if op is None:
                error = ApiError(400, "invalid", "a frame is an object with an 'op'")
            elif not isinstance(op, str) or op not in CLIENT_OPS:
                ops = ", ".join(sorted(CLIENT_OPS))
                error = ApiError(
                    400, "unknown_op", f"unknown op {str(op)[:64]!r}; use one of {ops}"
                )
        self._fail(ref, error)

    def internal_error(self, exc: BaseException) -> None:
        """Log an unexpected exception with its traceback and close with 1011."""
        self._log.opt(exception=exc).error("websocket session failed")
        last_error.record(f"{type(exc).__name__}: {exc}")
        self.close(CLOSE_INTERNAL, "internal error")

    def _fail(self, ref: Ref | None, exc: BaseException, tags: list[int] | None = None) -> None:
        """Answer an error frame, or close with 1011 for an unexpected exception."""
        if self._protocol.fail(ref, exc, tags):
            self._send_out()
        else:
            self.internal_error(exc)

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
        if self._closing is not None or self._protocol.state is not State.OPEN:
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
        permitted = self._can_publish.get(queue)
        if permitted is None:
            permitted = self._can_publish[queue] = allowed(user, Action.PUBLISH, queue)
        if not permitted:
            require(user, Action.PUBLISH, queue)
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
        if frame.headers is not None and len(frame.headers) > settings.max_headers:
            raise ApiError(
                422, "invalid", f"a message carries at most {settings.max_headers} headers"
            )
        content = self._codec.content_in(frame.content, settings.max_json_depth)
        if len(content) > settings.max_message_bytes:
            raise ApiError(
                413, "too_large", f"message content exceeds {settings.max_message_bytes} bytes"
            )
        if content is not frame.content:
            frame = msgspec.structs.replace(frame, content=content)
        return frame

    def _publish_group(self, frames: list[Publish]) -> None:
        """Publish checked frames to their (one) queue; each is confirmed or fails on its own."""
        refs = [frame.ref for frame in frames]
        try:
            future = self._broker.publish_each_nowait(frames[0].queue, frames)
        except Exception as exc:
            for ref in refs:
                self._fail(ref, exc)
            return
        self._protocol.published(len(frames))
        future.add_done_callback(functools.partial(self._confirm, refs))

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
        if self._protocol.state is State.CLOSED:
            return
        self._send_out()
        if self._reader_wakeup is not None:
            self._wake_reader()

    # -- subscriptions --------------------------------------------------------------

    async def _subscribe(self, frame: Subscribe) -> None:
        settings = self._settings
        consumers = self._consumers
        if len(consumers) >= settings.max_consumers_per_connection:
            raise ApiError(
                429,
                "too_many_subscriptions",
                f"a connection holds at most {settings.max_consumers_per_connection} subscriptions",
            )
        if frame.prefetch > self._buffer_limit:
            raise ApiError(422, "invalid", f"prefetch is at most {self._buffer_limit}")
        require(self._current_user(), Action.CONSUME, frame.queue)
        consumer = consumers.add(self, frame.queue, frame.prefetch)
        try:
            consumer.consumer_id = await self._broker.subscribe(
                frame.queue, frame.prefetch, consumer, consumer.queue_deleted
            )
        except BaseException:
            consumers.discard(consumer)
            raise
        if self._closing is not None or self._protocol.state is not State.OPEN:
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
        self, tags: list[int], ref: Ref | None, nack: tuple[bool, str | None] | None
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
            try:
                if nack is None:
                    outcome = await broker.consumer_ack(consumer.queue, consumer.consumer_id, ids)
                else:
                    requeue, reason = nack
                    outcome = await broker.consumer_nack(
                        consumer.queue, consumer.consumer_id, ids, requeue, reason
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
        lease = min(frame.lease, self._settings.max_lease_s)
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

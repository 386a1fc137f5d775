"""`Session`: the state of one authenticated WebSocket connection and its two loops.

A session owns its subscriptions, the map of delivery tags to what they
settle, its in-flight publishes and one send buffer:

* The **reader** (the endpoint's task) decodes client frames and dispatches
  them with ``match``. Publishes never await: `Broker.publish_nowait` returns
  the commit future, whose done-callback queues the ``confirm``; many
  publishes are in flight at once and confirms leave in commit order.
* Each `Subscription` is the `DeliverySink` of one consumer: the queue's
  actor calls it synchronously with the messages it leased, and it encodes
  ``deliver`` frames straight into the send buffer.
* The **writer** task drains the send buffer into the socket, one WebSocket
  message per frame.

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
from broker_core.errors import BrokerError, QueueNotFound
from broker_core.permissions import require

from ..decoding import fail_undeliverable
from ..errors import ApiError, InvalidInput, classify, last_error
from ..logging import current_request_id
from ..operations import (
    capped_lease,
    check_content,
    check_headers,
    check_prefetch,
    check_subscriptions,
)
from ..wire import (
    BATCH_BYTES,
    CLIENT_OPS,
    Ack,
    Auth,
    Authenticated,
    ClientBatch,
    Confirm,
    Deliver,
    Error,
    Nack,
    Publish,
    Subscribe,
    Subscribed,
    Touch,
    Unsubscribe,
    Unsubscribed,
    peek,
)
from .codec import Undeliverable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from broker_core.auth import Claims, User
    from broker_core.messages import Entry
    from broker_core.queue import Published

    from ..context import BrokerContext
    from ..wire import ClientOne, Ref
    from .codec import Codec

__all__ = [
    "CLOSE_EXPIRED",
    "CLOSE_INTERNAL",
    "CLOSE_POLICY",
    "CLOSE_REVOKED",
    "CLOSE_TOO_BIG",
    "Session",
    "Subscription",
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
_REVOKED_TAGS = 10_000
"""Tags of revoked subscriptions remembered, to refuse them as ``revoked`` (oldest forgotten)."""


def authenticate(ctx: BrokerContext, token: str) -> tuple[User, Claims]:
    """The user and verified claims of an access token.

    Raises:
        InvalidToken: the token is invalid, expired, or no longer speaks for its user.
    """
    claims = ctx.accounts.tokens.verify(token, TokenType.ACCESS)
    return ctx.accounts.authenticate(token), claims


class Subscription:
    """One push consumer of a session: the sink its queue's actor delivers to.

    ``held`` maps the tags of unsettled deliveries to the entry and the
    attempt they delivered, so a late ack of an older delivery of the same
    message (requeued meanwhile) is refused instead of settling the new one.
    """

    __slots__ = ("consumer_id", "early", "ended", "held", "id", "prefetch", "queue", "session")

    def __init__(self, session: Session, id: int, queue: str, prefetch: int) -> None:
        self.session = session
        self.id = id
        self.queue = queue
        self.prefetch = prefetch
        self.consumer_id: int | None = None
        self.held: dict[int, tuple[Entry, int]] = {}
        # Deliveries made before ``subscribed`` was sent wait here, so the
        # client always learns the subscription before its first delivery.
        self.early: list[str | bytes] | None = []
        # Why the server ended it; from then on deliveries are dropped (and
        # requeued when the consumer is removed).
        self.ended: str | None = None

    def queue_deleted(self) -> None:
        """End the subscription because its queue was deleted (the actor's ``on_close``)."""
        try:
            self.session.end_subscription(self, "queue deleted")
        except Exception as exc:
            self.session.internal_error(exc)

    def __call__(self, queue: str, entries: list[Entry]) -> None:
        """Take deliveries from the queue's actor (synchronously, in its turn; never raises)."""
        try:
            self.session.deliver(self, entries)
        except Exception as exc:
            # Raising here would break the actor's turn for every consumer of the queue.
            self.session.internal_error(exc)


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
        self._subs: dict[int, Subscription] = {}
        self._tags: dict[int, Subscription] = {}
        self._next_tag = 0
        self._next_sub = 0
        self.inflight = 0
        self.peak_inflight = 0
        self.peak_buffered = 0
        self._strikes = 0
        self._can_publish: dict[str, bool] = {}
        self._closing: tuple[int, str] | None = None
        self._flush_on_close = True
        self._ended = False
        self._release: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._revoking: set[asyncio.Task[None]] = set()
        self._revoked_tags: dict[int, str] = {}

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
            self._ended = True
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
        return len(self._subs)

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close the connection with ``code`` and ``reason``; requeue what it holds now.

        With ``flush``, buffered frames are sent first, and the confirms (or
        errors) of publishes in flight: a client told its publish is committed
        won't send it again.
        """
        if self._closing is not None or self._ended:
            return
        self._closing = (code, reason)
        self._flush_on_close = flush
        self._log.info("websocket closing", code=code, reason=reason)
        if not flush:
            self._buffer.clear()
            self._buffered_bytes = 0
        if self._subs:
            self._release = self._loop.create_task(self._release_all())
        self._wake_writer()
        self._wake_reader()

    async def _release_all(self) -> None:
        subs = list(self._subs.values())
        self._subs.clear()
        self._tags.clear()
        for sub in subs:
            if sub.consumer_id is not None:
                with suppress(Exception):
                    await self._broker.unsubscribe(sub.queue, sub.consumer_id)

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, self._claims.exp - time.time())
        self._expiry = self._loop.call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        self.close(CLOSE_EXPIRED, "access token expired; send an auth frame with a fresh one")

    # -- writer ---------------------------------------------------------------------

    def _push(self, data: str | bytes) -> None:
        buffer = self._buffer
        buffer.append(data)
        self._buffered_bytes += len(data)
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
        kind = "bytes" if self._codec.binary else "text"
        try:
            while True:
                while buffer:
                    data = self._take()
                    await send({"type": "websocket.send", kind: data})
                    if self._reader_wakeup is not None:
                        self._wake_reader()
                if self._closing is not None and (self.inflight == 0 or not self._flush_on_close):
                    code, reason = self._closing
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return
                self._writer_wakeup = self._loop.create_future()
                await self._writer_wakeup
                self._writer_wakeup = None
        except Exception as exc:
            # The client went away mid-send: the reader sees the disconnect.
            self._log.debug("websocket send failed", error=repr(exc))
            self._ended = True
            self._wake_reader()

    # -- reader ---------------------------------------------------------------------

    def _must_pause(self) -> bool:
        return self._closing is None and not self._ended and (
            len(self._buffer) >= self._buffer_limit
            or self._buffered_bytes >= _PAUSE_BYTES
            or self.inflight >= self._max_inflight
        )  # fmt: skip

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
        info = classify(exc)
        if info.status >= 500 and info.code == "internal":
            self.internal_error(exc)
            return
        self._push(
            self._codec.encode(Error(code=info.code, detail=info.detail, ref=ref, tags=tags))
        )

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
        if self._ended or self._closing is not None:
            return
        reason = revocation_reason(user, self._claims)
        if reason is not None:
            self.close(CLOSE_REVOKED, f"revoked: {reason}", flush=False)
            return
        assert user is not None, "a user with a current token exists"
        self.user = user
        self._can_publish.clear()
        for sub in list(self._subs.values()):
            if not allowed(user, Action.CONSUME, sub.queue):
                self._revoke(sub)

    def _revoke(self, sub: Subscription) -> None:
        """End ``sub``: its deliveries stop now, its tags are refused, its consumer is removed."""
        del self._subs[sub.id]
        sub.ended = "revoked"
        revoked = self._revoked_tags
        for tag in sub.held:
            self._tags.pop(tag, None)
            revoked[tag] = sub.queue
        sub.held.clear()
        while len(revoked) > _REVOKED_TAGS:
            del revoked[next(iter(revoked))]
        self._log.info("subscription revoked", queue=sub.queue, subscription=sub.id)
        if sub.consumer_id is None:
            return  # still subscribing: `_subscribe` removes the consumer and answers revoked
        task = self._loop.create_task(self._end_revoked(sub, sub.consumer_id))
        self._revoking.add(task)
        task.add_done_callback(self._revoking.discard)

    async def _end_revoked(self, sub: Subscription, consumer_id: int) -> None:
        try:
            requeued = await self._broker.unsubscribe(sub.queue, consumer_id)
        except Exception as exc:
            self.internal_error(exc)
            return
        if not self._ended and self._closing is None:
            self._push(
                self._codec.encode(
                    Unsubscribed(subscription=sub.id, requeued=requeued, reason="revoked")
                )
            )

    def _refuse_revoked(self, tags: list[int], ref: Ref | None, forget: bool) -> list[int]:
        """Answer ``revoked`` for the tags of revoked subscriptions; return the other tags."""
        revoked = self._revoked_tags
        refused = [tag for tag in tags if tag in revoked]
        if not refused:
            return tags
        queues = sorted({revoked[tag] for tag in refused})
        if forget:
            for tag in refused:
                del revoked[tag]
        shown = ", ".join(str(tag) for tag in refused[:20])
        self._fail(
            ref,
            ApiError(
                403,
                "revoked",
                f"delivery tag {shown} was revoked: consume on queue "
                f"{', '.join(map(repr, queues))} is no longer allowed; the message was requeued",
            ),
            tags=refused,
        )
        refused_set = set(refused)
        return [tag for tag in tags if tag not in refused_set]

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
        check_headers(settings, frame.headers)
        content = self._codec.content_in(frame.content, settings.max_json_depth)
        check_content(settings, content)
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
        self.inflight = inflight = self.inflight + len(frames)
        if inflight > self.peak_inflight:
            self.peak_inflight = inflight
        future.add_done_callback(functools.partial(self._confirm, refs))

    def _confirm(
        self, refs: list[Ref], future: asyncio.Future[list[Published | BrokerError]]
    ) -> None:
        self.inflight -= len(refs)
        error = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if self._ended:
            return
        if error is not None:
            for ref in refs:
                self._fail(ref, error)
        else:
            encode = self._codec.encode
            for ref, outcome in zip(refs, future.result(), strict=True):
                if isinstance(outcome, BrokerError):
                    self._fail(ref, outcome)
                else:
                    self._push(
                        encode(Confirm(ref=ref, message_id=outcome.id, duplicate=outcome.duplicate))
                    )
        if self._reader_wakeup is not None:
            self._wake_reader()

    # -- subscriptions --------------------------------------------------------------

    async def _subscribe(self, frame: Subscribe) -> None:
        check_subscriptions(self._settings, len(self._subs))
        check_prefetch(self._settings, frame.prefetch)
        require(self._current_user(), Action.CONSUME, frame.queue)
        self._next_sub += 1
        sub = Subscription(self, self._next_sub, frame.queue, frame.prefetch)
        self._subs[sub.id] = sub
        try:
            sub.consumer_id = await self._broker.subscribe(
                frame.queue, frame.prefetch, sub, sub.queue_deleted
            )
        except BaseException:
            self._subs.pop(sub.id, None)
            raise
        if self._closing is not None or self._ended:
            self._subs.pop(sub.id, None)
            await self._broker.unsubscribe(sub.queue, sub.consumer_id)
            return
        if sub.id not in self._subs:
            if sub.ended == "revoked":  # the right to consume was removed meanwhile
                await self._broker.unsubscribe(sub.queue, sub.consumer_id)
                raise ApiError(
                    403, "revoked", f"consume on queue {sub.queue!r} is no longer allowed"
                )
            raise QueueNotFound(frame.queue)  # the queue was deleted meanwhile
        self._push(
            self._codec.encode(
                Subscribed(
                    queue=sub.queue, subscription=sub.id, prefetch=sub.prefetch, ref=frame.ref
                )
            )
        )
        early, sub.early = sub.early or [], None
        for data in early:
            self._push(data)
        self._log.debug("subscribed", queue=sub.queue, subscription=sub.id)

    async def _unsubscribe(self, frame: Unsubscribe) -> None:
        sub = self._subs.pop(frame.subscription, None)
        if sub is None:
            raise ApiError(
                404, "subscription_not_found", f"no subscription {frame.subscription} here"
            )
        for tag in sub.held:
            self._tags.pop(tag, None)
        sub.held.clear()
        assert sub.consumer_id is not None, "live subscriptions have a consumer"
        requeued = await self._broker.unsubscribe(sub.queue, sub.consumer_id)
        self._push(
            self._codec.encode(Unsubscribed(subscription=sub.id, requeued=requeued, ref=frame.ref))
        )

    def end_subscription(self, sub: Subscription, reason: str) -> None:
        """Forget a subscription the server ended, and tell the client why."""
        if self._subs.pop(sub.id, None) is None or self._ended or self._closing is not None:
            return
        sub.ended = reason
        for tag in sub.held:
            self._tags.pop(tag, None)
        sub.held.clear()
        if sub.early is None:  # else the client never learnt of it: the subscribe fails
            self._push(
                self._codec.encode(Unsubscribed(subscription=sub.id, requeued=0, reason=reason))
            )

    def deliver(self, sub: Subscription, entries: list[Entry]) -> None:
        """Encode deliveries into the send buffer (called by the queue's actor, in its turn)."""
        if self._ended or self._closing is not None or sub.ended is not None:
            return  # the release (or revocation) under way requeues them
        codec = self._codec
        encode = codec.encode
        held = sub.held
        tags = self._tags
        early = sub.early
        push = self._push if early is None else early.append
        queue = sub.queue
        undeliverable: list[int] = []
        for entry in entries:
            assert entry.content is not None, "only hydrated entries are delivered"
            try:
                content = codec.content_out(entry.content)
            except Undeliverable:
                undeliverable.append(entry.id)
                continue
            self._next_tag = tag = self._next_tag + 1
            held[tag] = (entry, entry.attempt)
            tags[tag] = sub
            push(
                encode(
                    Deliver(
                        subscription=sub.id,
                        queue=queue,
                        tag=tag,
                        message_id=entry.id,
                        content=content,
                        headers=entry.headers,
                        attempt=entry.attempt,
                        redelivered=entry.redelivered,
                    )
                )
            )
        if undeliverable:
            # Failed, not sent: one poison message must not end the session (and
            # requeue it at the head again for the next consumer to die on).
            task = self._loop.create_task(fail_undeliverable(self._broker, queue, undeliverable))
            self._chores.add(task)
            task.add_done_callback(self._chores.discard)
        if len(held) > 2 * sub.prefetch + 64:
            self._prune(sub)

    def _prune(self, sub: Subscription) -> None:
        """Forget tags whose delivery ended without this connection (lease expired, REST ack).

        Runs inside the actor's turn, so reading its state is consistent.
        """
        try:
            processing = self._broker.leases(sub.queue)
        except QueueNotFound:
            return
        cid = sub.consumer_id
        stale = [
            tag
            for tag, (entry, attempt) in sub.held.items()
            if entry.attempt != attempt
            or (cid is not None and entry.consumer != cid)
            or processing.get(entry.id) is not entry
        ]
        for tag in stale:
            del sub.held[tag]
            self._tags.pop(tag, None)

    # -- settlement -----------------------------------------------------------------

    def _claim(
        self, tags: list[int], keep: bool
    ) -> tuple[dict[Subscription, dict[int, int]], list[int]]:
        """Group ``tags`` by subscription as ``{message id: tag}``; return them and the bad tags.

        Without ``keep`` the tags are forgotten (ack, nack): settled or not,
        they can't be used again.
        """
        groups: dict[Subscription, dict[int, int]] = {}
        bad: list[int] = []
        for tag in tags:
            sub = self._tags.get(tag) if keep else self._tags.pop(tag, None)
            if sub is None:
                bad.append(tag)
                continue
            entry, attempt = sub.held[tag] if keep else sub.held.pop(tag)
            if entry.attempt != attempt or entry.consumer != sub.consumer_id:
                # Requeued since (its lease expired): this tag no longer names it.
                sub.held.pop(tag, None)
                self._tags.pop(tag, None)
                bad.append(tag)
                continue
            groups.setdefault(sub, {})[entry.id] = tag
        return groups, bad

    async def _settle(
        self, tags: list[int], ref: Ref | None, nack: tuple[bool, str | None] | None
    ) -> None:
        self._current_user()
        if self._revoked_tags:
            tags = self._refuse_revoked(tags, ref, forget=True)
        groups, bad = self._claim(tags, keep=False)
        broker = self._broker
        for sub, by_id in groups.items():
            assert sub.consumer_id is not None, "a delivering subscription has a consumer"
            ids = list(by_id)
            try:
                if nack is None:
                    outcome = await broker.consumer_ack(sub.queue, sub.consumer_id, ids)
                else:
                    requeue, reason = nack
                    outcome = await broker.consumer_nack(
                        sub.queue, sub.consumer_id, ids, requeue, reason
                    )
            except Exception as exc:
                if classify(exc).status >= 500:
                    raise
                bad.extend(by_id.values())
                continue
            bad.extend(by_id[id] for id in outcome.errors)
        if bad:
            self._fail(ref, _unknown_tags(bad), tags=bad)

    async def _touch(self, frame: Touch) -> None:
        self._current_user()
        tags = frame.tags
        if self._revoked_tags:
            tags = self._refuse_revoked(tags, frame.ref, forget=False)
        groups, bad = self._claim(tags, keep=True)
        lease = capped_lease(self._settings, frame.lease)
        for sub, by_id in groups.items():
            queue = sub.queue
            for id, tag in by_id.items():
                try:
                    await self._broker.touch(id, lease, allowed=queue.__eq__)
                except Exception as exc:
                    if classify(exc).status >= 500:
                        raise
                    bad.append(tag)
        if bad:
            self._fail(frame.ref, _unknown_tags(bad), tags=bad)

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
        self._push(
            self._codec.encode(
                Authenticated(
                    username=user.username,
                    expires_in=max(0.0, claims.exp - time.time()),
                    ref=frame.ref,
                )
            )
        )


def _unknown_tags(tags: list[int]) -> ApiError:
    shown = ", ".join(str(tag) for tag in tags[:20])
    more = "" if len(tags) <= 20 else f" and {len(tags) - 20} more"
    return ApiError(
        404, "unknown_tag", f"no unsettled delivery with tag {shown}{more} on this connection"
    )

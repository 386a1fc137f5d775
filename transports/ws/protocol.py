"""`WsProtocol`: what one ``/ws`` connection answers, without the socket.

Sans I/O, like websockets' ``protocol.py`` beside its ``asyncio/connection.py``:
no socket, no asyncio, no clock (time comes in as ``now``). The session (the
I/O shell, `transports.ws.session.Session`) tells the protocol what happened
(deliveries from a queue's actor, publish outcomes, subscriptions made or
ended, refused frames) and sends what `data_to_send` returns; the protocol
keeps the bookkeeping those answers need:

* the connection's subscriptions and delivery tags (`Consumers`);
* the publishes in flight (``inflight``, ``peak_inflight``), whose confirms
  or errors it encodes as their outcomes come;
* its `State`: deliveries stop once it is closing; confirms still leave
  while it closes (a client told its publish is committed won't send it
  again) and nothing does once it is closed.

Every server frame goes through one outbox, so frames leave in the order
their events came.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from broker_core.errors import BrokerError

from ..errors import classify
from ..wire import Authenticated, Confirm, Deliver, Error, Subscribed, Unsubscribed
from .codec import Undeliverable
from .consumers import Consumers

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from broker_core.messages import Entry
    from broker_core.queue import Published
    from broker_core.topic_messages import TopicPublishResult

    from ..wire import Ref
    from .codec import Codec
    from .consumers import WsConsumer

__all__ = ["CLOSED", "CLOSING", "OPEN", "State", "WsProtocol", "unknown_tags_detail"]


class State(enum.Enum):
    """Where a connection is in its life."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


# Module constants, as websockets' protocol.py has them: on Python 3.11 looking
# a member up on its enum class costs ~100 ns, and `deliver` checks per call.
OPEN = State.OPEN
CLOSING = State.CLOSING
CLOSED = State.CLOSED


class WsProtocol:
    """The bookkeeping and the answers of one connection; drive it, then send `data_to_send`.

    Args:
        codec: the frame format the client chose.
        leases: the leased messages of a queue by id (`Broker.leases`), for `Consumers.prune`.
    """

    def __init__(self, codec: Codec, leases: Callable[[str], Mapping[int, Entry]]) -> None:
        self.codec = codec
        self.state = OPEN
        self.consumers = Consumers(leases)
        self.inflight = 0
        self.peak_inflight = 0
        self._out: list[bytes] = []

    # -- the outbox -----------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """The frames to send, in order, each the payload of one WebSocket message.

        Call it after each call that may answer, and send them all before
        anything else. The list is the caller's when it is not empty.
        """
        out = self._out
        if out:
            self._out = []
        return out

    # -- state ----------------------------------------------------------------------

    def close(self, flush: bool) -> None:
        """The connection is closing: deliveries stop; without ``flush`` unsent frames go."""
        if self.state is OPEN:
            self.state = CLOSING
        if not flush:
            self._out.clear()

    def connection_lost(self) -> None:
        """The connection is gone: nothing is answered from now on."""
        self.state = CLOSED
        self._out.clear()

    # -- errors ---------------------------------------------------------------------

    def error(self, ref: Ref | None, code: str, detail: str, tags: list[int] | None = None) -> None:
        """Answer an ``error`` frame."""
        self._out.append(self.codec.encode(Error(code=code, detail=detail, ref=ref, tags=tags)))

    def fail(self, ref: Ref | None, exc: BaseException, tags: list[int] | None = None) -> bool:
        """Answer ``exc`` as an ``error`` frame; ``False`` (nothing answered) if it was unexpected.

        For an unexpected exception the session logs it and closes with 1011.
        """
        info = classify(exc)
        if info.status >= 500 and info.code == "internal":
            return False
        self.error(ref, info.code, info.detail, tags)
        return True

    def unknown_tags(self, ref: Ref | None, tags: list[int]) -> None:
        """Answer ``unknown_tag`` for tags that name no unsettled delivery of this connection."""
        self.error(ref, "unknown_tag", unknown_tags_detail(tags), tags)

    def refuse_revoked(self, tags: list[int], ref: Ref | None, forget: bool) -> list[int]:
        """Answer ``revoked`` for the tags of revoked subscriptions; return the other tags."""
        refused, queues, rest = self.consumers.split_revoked(tags, forget)
        if refused:
            shown = ", ".join(str(tag) for tag in refused[:20])
            self.error(
                ref,
                "revoked",
                f"delivery tag {shown} was revoked: consume on queue "
                f"{', '.join(map(repr, queues))} is no longer allowed; the message was requeued",
                refused,
            )
        return rest

    # -- deliveries -----------------------------------------------------------------

    def deliver(self, consumer: WsConsumer, entries: list[Entry]) -> list[int] | None:
        """Encode deliveries to ``consumer`` under new tags; return the ids it can't be sent.

        Called in the queue's actor's turn. Deliveries to a consumer whose
        ``subscribed`` has not left yet wait in its ``early`` list. Those
        made once the connection is closing, or the consumer ended, are
        dropped: removing the consumer requeues them. The session fails the
        undeliverable ids (bodies stored before the input rule) instead.
        """
        if self.state is not OPEN or consumer.ended is not None:
            return None
        codec = self.codec
        encode = codec.encode
        content_out = codec.content_out
        consumers = self.consumers
        held = consumer.held
        tags = consumers.tags
        early = consumer.early
        push = self._out.append if early is None else early.append
        queue = consumer.queue
        sid = consumer.id
        undeliverable: list[int] | None = None
        tag = consumers.next_tag
        try:
            for entry in entries:
                assert entry.content is not None, "only hydrated entries are delivered"
                try:
                    content = content_out(entry.content)
                except Undeliverable:
                    if undeliverable is None:
                        undeliverable = []
                    undeliverable.append(entry.id)
                    continue
                tag += 1
                held[tag] = (entry, entry.attempt)
                tags[tag] = consumer
                push(
                    encode(
                        Deliver(
                            subscription=sid,
                            queue=queue,
                            tag=tag,
                            message_id=entry.id,
                            content=content,
                            headers=entry.headers,
                            attempt=entry.attempt,
                            redelivered=entry.redelivered,
                            group=entry.group,
                        )
                    )
                )
        finally:
            consumers.next_tag = tag
        if len(held) > 2 * consumer.prefetch + 64:  # `Consumers.crowded`, inline: per call
            consumers.prune(consumer)
        return undeliverable

    # -- subscriptions --------------------------------------------------------------

    def subscribed(self, consumer: WsConsumer, ref: Ref | None) -> None:
        """Answer ``subscribed``, then the deliveries that came before it."""
        self._out.append(
            self.codec.encode(
                Subscribed(
                    queue=consumer.queue,
                    subscription=consumer.id,
                    prefetch=consumer.prefetch,
                    ref=ref,
                )
            )
        )
        early, consumer.early = consumer.early or [], None
        self._out.extend(early)

    def unsubscribed(self, consumer: WsConsumer, requeued: int, ref: Ref | None) -> None:
        """Answer the client's ``unsubscribe``."""
        self._out.append(
            self.codec.encode(Unsubscribed(subscription=consumer.id, requeued=requeued, ref=ref))
        )

    def end(self, consumer: WsConsumer, reason: str) -> None:
        """Forget a subscription the server ended, and tell the client why (if it knew of it)."""
        consumers = self.consumers
        if consumers.live.pop(consumer.id, None) is None or self.state is not OPEN:
            return
        consumer.ended = reason
        consumers.forget(consumer)
        if consumer.early is None:  # else the client never learnt of it: the subscribe fails
            self._out.append(
                self.codec.encode(Unsubscribed(subscription=consumer.id, requeued=0, reason=reason))
            )

    def revoked(self, consumer: WsConsumer, requeued: int) -> None:
        """Tell the client its revoked subscription ended, once its consumer is removed."""
        if self.state is OPEN:
            self._out.append(
                self.codec.encode(
                    Unsubscribed(subscription=consumer.id, requeued=requeued, reason="revoked")
                )
            )

    # -- publishes ------------------------------------------------------------------

    def published(self, count: int) -> None:
        """``count`` publishes went to the broker: they are in flight until `confirmed`."""
        self.inflight = inflight = self.inflight + count
        if inflight > self.peak_inflight:
            self.peak_inflight = inflight

    def confirmed(
        self, refs: list[Ref], outcome: list[Published | BrokerError] | BaseException
    ) -> list[BaseException] | None:
        """Answer the outcome of publishes in flight: a ``confirm`` or an ``error`` for each.

        ``outcome`` has one result per ref, or is the exception that failed
        them all. Returns the unexpected exceptions (nothing was answered for
        them; the session logs them and closes with 1011), else ``None``.
        """
        self.inflight -= len(refs)
        if self.state is CLOSED:
            return None
        unexpected: list[BaseException] | None = None
        if isinstance(outcome, BaseException):
            for ref in refs:
                if not self.fail(ref, outcome):
                    unexpected = [*(unexpected or ()), outcome]
            return unexpected
        out = self._out
        encode = self.codec.encode
        for ref, one in zip(refs, outcome, strict=True):
            if isinstance(one, BrokerError):
                if not self.fail(ref, one):
                    unexpected = [*(unexpected or ()), one]
            else:
                out.append(encode(Confirm(ref=ref, message_id=one.id, duplicate=one.duplicate)))
        return unexpected

    def routed(self, ref: Ref, outcome: TopicPublishResult | BaseException) -> bool:
        """Answer a topic publish in flight: ``confirm {ref, routed}`` or an ``error``.

        Returns ``False`` when ``outcome`` is an unexpected exception (nothing
        was answered; the session logs it and closes with 1011).
        """
        self.inflight -= 1
        if self.state is CLOSED:
            return True
        if isinstance(outcome, BaseException):
            return self.fail(ref, outcome)
        self._out.append(self.codec.encode(Confirm(ref=ref, routed=outcome.routed)))
        return True

    # -- auth -----------------------------------------------------------------------

    def authenticated(self, username: str, expires_at: float, ref: Ref | None, now: float) -> None:
        """Answer an ``auth`` frame that renewed the token (which expires at ``expires_at``)."""
        self._out.append(
            self.codec.encode(
                Authenticated(username=username, expires_in=max(0.0, expires_at - now), ref=ref)
            )
        )


def unknown_tags_detail(tags: list[int]) -> str:
    """The detail of an ``unknown_tag`` error (the first 20 tags, then how many more)."""
    shown = ", ".join(str(tag) for tag in tags[:20])
    more = "" if len(tags) <= 20 else f" and {len(tags) - 20} more"
    return f"no unsettled delivery with tag {shown}{more} on this connection"

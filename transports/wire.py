"""The WebSocket protocol: every frame a client sends and the server answers, as msgspec Structs.

A frame is one JSON object (or, with the ``msgpack`` subprotocol, one
MessagePack map) whose ``op`` names its kind. A client frame with a field its
kind does not have is refused (``forbid_unknown_fields``): a typo such as
``priorty`` must not be dropped silently. Client frames form the tagged
union `ClientFrame`, server frames `ServerFrame`; each union has one typed
decoder per format, built once here, and `match` dispatches on the decoded
Struct.

From the client::

    auth         {token, ref?}
    subscribe    {queue, prefetch=10, ref?}
    unsubscribe  {subscription, ref?}
    ack          {tags, ref?}
    nack         {tags, requeue=true, reason?, ref?}
    touch        {tags, lease, ref?}
    publish      {queue, content, headers?, priority?, delay_ms?, deliver_at?,
                  ttl_ms?, dedup_id?, ref}
    publish      {topic, routing_key, content, ..., ref}  (to a topic's bound queues)
    batch        {frames: [any of the above but batch]}

From the server::

    authenticated {username, expires_in, ref?}
    subscribed    {queue, subscription, prefetch, ref?}
    unsubscribed  {subscription, requeued, reason?, ref?}
    deliver       {subscription, queue, tag, message_id, content, headers,
                   attempt, redelivered}
    confirm       {ref, message_id, duplicate?}
    confirm       {ref, routed: [{queue, message_id, duplicate?}]}  (a topic publish)
    error         {code, detail, ref?, tags?}
    batch         {frames: [any of the above but batch]}

A ``batch`` carries several frames in one WebSocket message, handled in order
as if each had come alone: under load one message per event-loop turn
replaces hundreds. A client may always send one; the server sends them to a
connection opened with ``?batch=true`` (see `transports.ws`).

`Publish` is a `PublishRequest` with a queue and a ``ref``: the broker takes
the decoded frame as it is. ``content`` stays `msgspec.Raw`, so a JSON body is
stored and pushed as the exact bytes the publisher sent, never re-encoded.

This module sits beside the transports, not inside `transports.ws`: the
server's endpoint and the Python client (`transports.client`) speak the same
frames, and neither may import the other.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from broker_core.messages import DelayMillis, PublishRequest, QueueNameField
from broker_core.topic_messages import RoutedMessage, RoutingKeyField

__all__ = [
    "BATCH_BYTES",
    "CLIENT_OPS",
    "Ack",
    "Auth",
    "Authenticated",
    "ClientBatch",
    "ClientFrame",
    "Confirm",
    "Deliver",
    "Error",
    "Nack",
    "Publish",
    "Ref",
    "ServerBatch",
    "ServerFrame",
    "Subscribe",
    "Subscribed",
    "Touch",
    "Unsubscribe",
    "Unsubscribed",
    "join_json",
    "join_msgpack",
    "json_client_decoder",
    "json_encoder",
    "json_server_decoder",
    "msgpack_client_decoder",
    "msgpack_encoder",
    "msgpack_server_decoder",
    "peek",
]

Ref = int | Annotated[str, msgspec.Meta(max_length=256)]
"""A client's correlation id, echoed in the answer (``confirm``, ``subscribed``, ``error``)."""

Tags = Annotated[list[int], msgspec.Meta(min_length=1, max_length=10_000)]
Prefetch = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Lease = Annotated[float, msgspec.Meta(gt=0, le=43_200)]


class _Frame(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", omit_defaults=True):
    """Base of every frame: tagged by ``op``; unset optional fields are left out on the wire."""


# -- client frames ------------------------------------------------------------------


class Auth(_Frame, frozen=True, kw_only=True, tag="auth", forbid_unknown_fields=True):
    """Authenticate (first frame without an ``Authorization`` header) or re-authenticate."""

    token: Annotated[str, msgspec.Meta(max_length=4096)]
    ref: Ref | None = None


class Subscribe(_Frame, frozen=True, kw_only=True, tag="subscribe", forbid_unknown_fields=True):
    """Become a push consumer of ``queue`` holding at most ``prefetch`` unacked deliveries."""

    queue: QueueNameField
    prefetch: Prefetch = 10
    ref: Ref | None = None


class Unsubscribe(_Frame, frozen=True, kw_only=True, tag="unsubscribe", forbid_unknown_fields=True):
    """End a subscription; what it held is requeued (redelivered)."""

    subscription: int
    ref: Ref | None = None


class Ack(_Frame, frozen=True, kw_only=True, tag="ack", forbid_unknown_fields=True):
    """Settle deliveries (by their ``tag``) as processed, keeping ``result`` (any JSON) if given."""

    tags: Tags
    ref: Ref | None = None
    result: Any = None
    """Decoded (JSON or MessagePack) and kept as JSON; left out on the wire when ``None``."""


class Nack(_Frame, frozen=True, kw_only=True, tag="nack", forbid_unknown_fields=True):
    """Give deliveries back: requeued (redelivered) or, without ``requeue``, failed.

    A requeue waits ``delay_ms`` if given, else the queue's ``retry`` back-off.
    """

    tags: Tags
    requeue: bool = True
    reason: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    ref: Ref | None = None
    delay_ms: DelayMillis | None = None


class Touch(_Frame, frozen=True, kw_only=True, tag="touch", forbid_unknown_fields=True):
    """Extend the leases of held deliveries to ``lease`` seconds from now."""

    tags: Tags
    lease: Lease
    ref: Ref | None = None


class Publish(
    PublishRequest, frozen=True, kw_only=True, tag="publish", tag_field="op", omit_defaults=True
):
    """Publish one message to ``queue``; answered by ``confirm`` once it is committed.

    With ``topic`` and ``routing_key`` instead of ``queue``, the message goes to
    every queue bound to the topic by a matching pattern, in one commit, and
    the ``confirm`` lists them in ``routed`` (`broker_core.topic_registry`).
    """

    queue: QueueNameField | None = None
    ref: Ref
    topic: QueueNameField | None = None
    routing_key: RoutingKeyField | None = None


ClientOne = Publish | Ack | Nack | Subscribe | Unsubscribe | Touch | Auth


class ClientBatch(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="op",
    tag="batch",
    forbid_unknown_fields=True,
):
    """Several client frames in one message, handled in order."""

    frames: Annotated[list[ClientOne], msgspec.Meta(min_length=1, max_length=10_000)]
    ref: None = None  # a batch has no answer of its own: its frames do


ClientFrame = ClientOne | ClientBatch
"""Every frame a client may send."""

CLIENT_OPS = frozenset(
    {"publish", "ack", "nack", "subscribe", "unsubscribe", "touch", "auth", "batch"},
)
"""The ``op`` of every client frame."""


# -- server frames ------------------------------------------------------------------


class Authenticated(_Frame, frozen=True, kw_only=True, tag="authenticated"):
    """The answer to an ``auth`` frame: who the connection speaks for, and for how long."""

    username: str
    expires_in: float
    ref: Ref | None = None


class Subscribed(_Frame, frozen=True, kw_only=True, tag="subscribed"):
    """A subscription exists; its deliveries carry ``subscription``."""

    queue: str
    subscription: int
    prefetch: int
    ref: Ref | None = None


class Unsubscribed(_Frame, frozen=True, kw_only=True, tag="unsubscribed"):
    """A subscription ended; ``requeued`` messages it held went back to the queue.

    It answers an ``unsubscribe`` (with its ``ref``), or comes unasked, with a
    ``reason``, when the server ended the subscription (its queue was deleted).
    """

    subscription: int
    requeued: int
    reason: str | None = None
    ref: Ref | None = None


class Deliver(_Frame, frozen=True, kw_only=True, tag="deliver"):
    """A message pushed to a subscription; settle it by ``tag`` (unique per connection)."""

    subscription: int
    queue: str
    tag: int
    message_id: int
    content: msgspec.Raw
    headers: dict[str, str] | None
    attempt: int
    redelivered: bool
    group: str | None = None
    """The message's group (left out when it has none)."""


class Confirm(_Frame, frozen=True, kw_only=True, tag="confirm"):
    """A publish is committed; ``duplicate`` when its ``dedup_id`` was seen before.

    A topic publish's confirm has no ``message_id`` (0 here) but ``routed``:
    the queues it reached, each with its message id (empty when none matched).
    """

    ref: Ref
    message_id: int = 0
    duplicate: bool = False
    routed: list[RoutedMessage] | None = None


class Error(_Frame, frozen=True, kw_only=True, tag="error"):
    """A frame was refused; ``ref`` points at it when it had one, ``tags`` at the bad tags."""

    code: str
    detail: str
    ref: Ref | None = None
    tags: list[int] | None = None


ServerOne = Deliver | Confirm | Error | Subscribed | Unsubscribed | Authenticated


class ServerBatch(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag="batch"):
    """Several server frames in one message (to a connection that asked for batches)."""

    frames: list[ServerOne]


ServerFrame = ServerOne | ServerBatch
"""Every frame the server sends."""

BATCH_BYTES = 256 << 10
"""A sender's batch stops growing past this many bytes: well under the broker's 1 MiB frame
limit and websockets' default ``max_size``."""

_JSON_BATCH_HEAD = b'{"op":"batch","frames":['
_MSGPACK_BATCH_HEAD = msgspec.msgpack.encode({"op": "batch", "frames": []})[:-1]
"""A two-entry map whose second value, an array, follows: its header, then the frames."""


def join_json(frames: list[bytes]) -> bytes:
    """One ``batch`` frame of JSON frames already encoded (no frame is encoded again)."""
    return _JSON_BATCH_HEAD + b",".join(frames) + b"]}"


def join_msgpack(frames: list[bytes]) -> bytes:
    """One ``batch`` frame of MessagePack frames already encoded."""
    count = len(frames)
    if count < 16:
        header = bytes((0x90 | count,))
    elif count < 1 << 16:
        header = b"\xdc" + count.to_bytes(2, "big")
    else:
        header = b"\xdd" + count.to_bytes(4, "big")
    return _MSGPACK_BATCH_HEAD + header + b"".join(frames)


class _Envelope(msgspec.Struct):
    """What is left of a frame that failed to decode: its ``op`` and ``ref``, if any."""

    op: Any = None
    ref: Any = None


json_encoder = msgspec.json.Encoder()
msgpack_encoder = msgspec.msgpack.Encoder()
json_client_decoder = msgspec.json.Decoder(ClientFrame)
msgpack_client_decoder = msgspec.msgpack.Decoder(ClientFrame)
json_server_decoder = msgspec.json.Decoder(ServerFrame)
msgpack_server_decoder = msgspec.msgpack.Decoder(ServerFrame)
_json_envelope = msgspec.json.Decoder(_Envelope)
_msgpack_envelope = msgspec.msgpack.Decoder(_Envelope)


def peek(data: str | bytes, msgpack: bool = False) -> tuple[object, Ref | None]:
    """The ``op`` and a well-formed ``ref`` of a frame that did not decode, for its error.

    Returns ``(None, None)`` when ``data`` is not even an object.
    """
    try:
        if msgpack:
            envelope = _msgpack_envelope.decode(data.encode() if isinstance(data, str) else data)
        else:
            envelope = _json_envelope.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None, None
    ref = envelope.ref
    if isinstance(ref, bool) or not isinstance(ref, int | str) or len(str(ref)) > 256:
        ref = None
    return envelope.op, ref

"""The input rule every decode site applies first: valid UTF-8, no lone surrogate, bounded depth.

DESIGN.md, "Trust": strings in every JSON body, WebSocket frame and GraphQL
variable are valid UTF-8 and JSON nests at most ``max_json_depth`` levels.
msgspec can't enforce either on its own: a message's ``content`` is kept as
``msgspec.Raw``, whose bytes it only skips over (neither their UTF-8 nor a
``\\ud800`` escape is looked at), and past about a thousand levels it raises
`RecursionError`, which nothing maps. So REST, WebSocket and GraphQL call
`check_json` on the bytes before any decoder sees them.

Every pass is in C, a few per body: an ASCII test (a strict UTF-8 decode
when it fails), searches for a backslash and a surrogate escape, and two
bracket counts. Only a body that has a surrogate escape takes a slower look
(escapes paired up). Depth is measured only when the body has more brackets
than the limit (a batch frame of hundreds of messages does): strings are cut
out by splitting at their quotes, the brackets left are reduced to ``()``,
and innermost pairs are deleted one level per pass, so a body nested ``d``
deep costs ``d`` passes over its brackets, never a regular expression or a
Python loop over the whole body (they cost a third of the event loop's time
end to end with batch frames).

A stored body that breaks the rule (stored before it existed) can't be
encoded for every consumer; `deliverable` says so, and each delivery path
fails or dead-letters such a message with `UNDELIVERABLE` as its reason
instead of breaking the session that was to receive it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from .errors import InvalidEncoding, InvalidInput, TooDeep

if TYPE_CHECKING:
    from collections.abc import Iterable

    from broker_core.broker import Broker
    from broker_core.messages import MessagesPage, MessageView

__all__ = [
    "DELIVERY_DEPTH",
    "UNDELIVERABLE",
    "check_json",
    "deliverable",
    "fail_undeliverable",
    "showable",
    "showable_page",
]

DELIVERY_DEPTH = 512
"""Depth up to which a stored body is still delivered: the highest ``max_json_depth``, so
lowering the setting never makes messages accepted before undeliverable. Deeper, msgspec and
the stdlib's ``json`` come near Python's recursion limit (1,000 frames, the server's included)."""
UNDELIVERABLE = "undeliverable: invalid encoding"
"""The ``last_error`` of a stored message failed because no consumer could be sent it."""

_SURROGATE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_TEXT = re.compile(r"\\u[dD][89a-fA-F]")
_ESCAPE_BYTES = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_ESCAPE_TEXT = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
# Brackets become "(" and ")", everything else goes.
_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def check_json(data: bytes | str, max_depth: int) -> None:
    """Refuse JSON with invalid UTF-8, a lone surrogate escape, or nested past ``max_depth``.

    Call it on a whole body or frame before decoding it. Malformed JSON is
    left for the decoder to report.

    Raises:
        InvalidEncoding: invalid or overlong UTF-8 bytes, an encoded surrogate, or a
            ``\\uD800``-``\\uDFFF`` escape that is not half of a pair.
        TooDeep: arrays and objects nested deeper than ``max_depth``.
    """
    if isinstance(data, str):
        if not data.isascii():
            try:
                data.encode()
            except UnicodeEncodeError:
                raise InvalidEncoding("the text holds a lone surrogate") from None
        escape = data.find("\\")
        if escape >= 0 and _has_surrogate_escape(data, escape):
            _check_escapes(_ESCAPE_TEXT.finditer(data, escape))
        if len(data) > 2 * max_depth and data.count("[") + data.count("{") > max_depth:
            _check_depth(data.encode(), escape >= 0, max_depth)
        return
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError as exc:
            raise InvalidEncoding(f"invalid UTF-8 at byte {exc.start}") from None
    escape = data.find(b"\\")
    if escape >= 0 and _has_surrogate_escape(data, escape):
        _check_escapes(_ESCAPE_BYTES.finditer(data, escape))
    # Nesting past max_depth takes two bytes a level: a shorter body can't (and a
    # malformed one that short stays far from the decoders' recursion limit).
    if len(data) > 2 * max_depth and data.count(b"[") + data.count(b"{") > max_depth:
        _check_depth(data, escape >= 0, max_depth)


def deliverable(body: bytes) -> bool:
    """Whether a stored body can be encoded for every consumer (JSON, MessagePack, GraphQL)."""
    try:
        check_json(body, DELIVERY_DEPTH)
    except InvalidInput:
        return False
    return True


def _check_escapes(escapes: Iterable[re.Match[Any]]) -> None:
    """Pair every surrogate escape: a high one (D800-DBFF) right before a low one (DC00-DFFF).

    ``escapes`` are the matches of every backslash escape, left to right, so an
    escaped backslash (``\\\\ud800``) is consumed whole and never read as one.
    """
    high_end = -1
    for match in escapes:
        digits = match.group(1)
        code = int(digits, 16) if digits is not None else -1
        if high_end >= 0:
            if match.start() != high_end or not 0xDC00 <= code <= 0xDFFF:
                raise InvalidEncoding("a \\u escape holds a high surrogate without its pair")
            high_end = -1
        elif 0xD800 <= code <= 0xDBFF:
            high_end = match.end()
        elif 0xDC00 <= code <= 0xDFFF:
            raise InvalidEncoding("a \\u escape holds a low surrogate without its pair")
    if high_end >= 0:
        raise InvalidEncoding("a \\u escape holds a high surrogate without its pair")


def _has_surrogate_escape(data: Any, start: int) -> bool:
    """Whether ``data`` holds a ``\\uD800``-``\\uDFFF`` escape past ``start`` (C searches first)."""
    if isinstance(data, bytes):
        if data.find(b"\\ud", start) < 0 and data.find(b"\\uD", start) < 0:
            return False
        return _SURROGATE_BYTES.search(data, start) is not None
    if data.find("\\ud", start) < 0 and data.find("\\uD", start) < 0:
        return False
    return _SURROGATE_TEXT.search(data, start) is not None


def _check_depth(data: bytes, escapes: bool, max_depth: int) -> None:
    """Raise `TooDeep` if ``data``'s arrays and objects (strings left out) nest past ``max_depth``.

    ``escapes``: whether ``data`` holds a backslash. Inside strings, escaped
    backslashes and then escaped quotes go first (pairs read from the left, as
    JSON does), so every quote left opens or closes a string: the pieces
    between them alternate, outside first.
    """
    if escapes:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(data.split(b'"')[::2])
    brackets = outside.translate(_PARENS, _NOT_BRACKETS)
    if brackets.count(b"(") <= max_depth:
        return
    depth = 0
    while depth <= max_depth:
        inner = brackets.replace(b"()", b"")
        if len(inner) == len(brackets):
            return  # nothing nests further (a malformed rest is the decoder's to report)
        brackets = inner
        depth += 1
    raise TooDeep(max_depth)


async def fail_undeliverable(broker: Broker, queue: str, ids: list[int]) -> None:
    """Fail (or dead-letter) leased messages whose stored body no consumer can be sent.

    Call it from a delivery path instead of sending them: with `UNDELIVERABLE`
    as their ``last_error`` they leave the queue's head for good, and the
    session, subscription or poll that met them goes on.
    """
    logger.warning("undeliverable messages failed", queue=queue, ids=ids)
    await broker.nack(ids, requeue=False, reason=UNDELIVERABLE)


_NULL = msgspec.Raw(b"null")


def showable(view: MessageView) -> MessageView:
    """``view`` for browsing: a body that can't be encoded shows as ``null``, with why.

    Browsing only looks: the message itself is failed when a consumer meets it.
    """
    if deliverable(bytes(view.content)):
        return view
    return msgspec.structs.replace(view, content=_NULL, last_error=UNDELIVERABLE)


def showable_page(page: MessagesPage) -> MessagesPage:
    """``page`` with each of its messages `showable`."""
    views = [showable(view) for view in page.messages]
    if all(new is old for new, old in zip(views, page.messages, strict=True)):
        return page
    return msgspec.structs.replace(page, messages=views)

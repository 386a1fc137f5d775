"""One place that maps errors to HTTP statuses, WebSocket codes and GraphQL codes.

Every transport asks `classify` what an exception means for the client; the
Litestar exception handlers registered by `exception_handlers` use it for
REST. An unexpected exception is logged with its traceback, recorded as the
broker's ``last_error`` and answered with a bare 500.
"""

from __future__ import annotations

import re
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from litestar import MediaType, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from loguru import logger

from broker_core.actor import QueueDeleted
from broker_core.auth import InvalidToken
from broker_core.errors import (
    BrokerError,
    InvalidName,
    InvalidRoutingKey,
    InvalidSchedule,
    InvalidTransition,
    MessageNotFound,
    NotPermitted,
    QueueExists,
    QueueFull,
    QueueInUse,
    QueueLimitReached,
    QueueNotFound,
    ScheduleExists,
    ScheduleNotFound,
    TopicExists,
    TopicNotFound,
    Unavailable,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from litestar import Request
    from litestar.types import ExceptionHandlersMap

__all__ = [
    "ApiError",
    "ErrorInfo",
    "InvalidEncoding",
    "InvalidInput",
    "LastError",
    "TooDeep",
    "UnknownField",
    "classify",
    "exception_handlers",
    "last_error",
    "raw_http_error",
]


class ApiError(Exception):
    """A client error raised by a transport with its status, code and detail."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        super().__init__(detail)


class InvalidInput(ApiError):
    """Bytes no decoder may see (DESIGN.md, Trust): bad encoding or too deep; always a 400."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(400, code, detail)


class InvalidEncoding(InvalidInput):
    """A string is not valid UTF-8: invalid or overlong bytes, or a lone surrogate."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_encoding", detail)


class TooDeep(InvalidInput):
    """JSON (or MessagePack) nested deeper than ``limit`` levels."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__("too_deep", f"nested deeper than {limit} levels")


class UnknownField(ApiError):
    """A request body or frame names a field its type does not have (a typo is not dropped)."""

    def __init__(self, field: str, where: str | None = None) -> None:
        self.field = field
        at = f" at {where}" if where else ""
        super().__init__(422, "unknown_field", f"unknown field {field!r}{at}")


_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(.*?)`(?: - at `(.*?)`)?$", re.DOTALL)


def _unknown_field(message: str) -> UnknownField | None:
    """The `UnknownField` a msgspec validation message reports, if it reports one."""
    match = _UNKNOWN_FIELD.search(message)
    if match is None:
        return None
    return UnknownField(match.group(1), match.group(2))


class ErrorInfo(NamedTuple):
    """What an exception means to a client: HTTP status, machine code, human detail."""

    status: int
    code: str
    detail: str


_STATUS: dict[type[BaseException], int] = {
    QueueNotFound: 404,
    MessageNotFound: 404,
    QueueExists: 409,
    InvalidTransition: 409,
    QueueFull: 409,
    QueueInUse: 409,
    QueueLimitReached: 422,
    InvalidName: 422,
    NotPermitted: 403,
    Unavailable: 503,
    QueueDeleted: 404,
    InvalidToken: 401,
    TopicNotFound: 404,
    TopicExists: 409,
    InvalidRoutingKey: 422,
    InvalidSchedule: 422,
    ScheduleNotFound: 404,
    ScheduleExists: 409,
}


class LastError:
    """The last server-side failure, for ``/stats`` (``last_error``, ``last_error_timestamp``)."""

    __slots__ = ("message", "timestamp")

    def __init__(self) -> None:
        self.message: str | None = None
        self.timestamp: float | None = None

    def record(self, message: str) -> None:
        """Remember ``message`` as the newest failure."""
        self.message = message
        self.timestamp = time.time()


last_error = LastError()


def classify(exc: BaseException) -> ErrorInfo:
    """Map any exception to what the client is told."""
    if isinstance(exc, ApiError):
        return ErrorInfo(exc.status, exc.code, exc.detail)
    if isinstance(exc, QueueDeleted):
        return ErrorInfo(404, "queue_not_found", f"queue {exc.args[0]!r} was deleted")
    if isinstance(exc, InvalidToken):
        return ErrorInfo(401, exc.code, exc.reason)
    if isinstance(exc, BrokerError):
        for kind, status in _STATUS.items():
            if isinstance(exc, kind):
                return ErrorInfo(status, exc.code, str(exc))
        return ErrorInfo(400, exc.code, str(exc))
    if isinstance(exc, msgspec.ValidationError):
        unknown = _unknown_field(str(exc))
        if unknown is not None:
            return classify(unknown)
        return ErrorInfo(422, "invalid", str(exc))
    if isinstance(exc, msgspec.DecodeError):
        return ErrorInfo(400, "malformed", str(exc))
    if isinstance(exc, ValidationException):
        for problem in exc.extra if isinstance(exc.extra, list) else ():
            unknown = (
                _unknown_field(str(problem.get("message", "")))
                if isinstance(problem, dict)
                else None
            )
            if unknown is not None:
                return classify(unknown)
        detail = str(exc.detail)
        malformed = detail.startswith("JSON is malformed") or "Invalid JSON" in detail
        return ErrorInfo(400 if malformed else 422, "malformed" if malformed else "invalid", detail)
    if isinstance(exc, NotAuthorizedException):
        return ErrorInfo(401, "unauthorized", str(exc.detail))
    if isinstance(exc, PermissionDeniedException):
        return ErrorInfo(403, "forbidden", str(exc.detail))
    if isinstance(exc, HTTPException):
        if exc.status_code >= 500 and "client disconnected" in str(exc.detail):
            # The peer hung up mid-body: nothing to answer, nothing went wrong here.
            return ErrorInfo(400, "client_disconnected", str(exc.detail))
        return ErrorInfo(exc.status_code, _code_of(exc.status_code), str(exc.detail))
    return ErrorInfo(500, "internal", "internal server error")


def _code_of(status: int) -> str:
    return {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
        429: "rate_limited",
    }.get(status, "error" if status < 500 else "internal")


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    info = classify(exc)
    if info.status >= 500 and info.code == "internal":
        logger.opt(exception=exc).error(
            "unhandled error", method=request.method, path=request.url.path
        )
        last_error.record(f"{type(exc).__name__}: {exc}")
    elif info.status >= 500:
        last_error.record(info.detail)
    body: dict[str, Any] = {"status_code": info.status, "detail": info.detail, "code": info.code}
    if isinstance(exc, ValidationException) and exc.extra:
        body["extra"] = exc.extra
    headers = getattr(exc, "headers", None) or {}
    if info.status == 401:
        headers = {**headers, "WWW-Authenticate": "Bearer"}
    return Response(
        content=body,
        status_code=info.status if info.status >= 400 else HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=MediaType.JSON,
        headers=headers,
    )


def raw_http_error(error: ApiError, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A whole HTTP/1.1 response for ``error`` that ends the connection, as bytes.

    For the HTTP protocol itself, which refuses a request or a connection
    before the app sees it (a request head too large, too many connections).
    The body is the same ``{status_code, detail, code}`` as every other error.
    """
    body = msgspec.json.encode(
        {"status_code": error.status, "detail": error.detail, "code": error.code}
    )
    lines = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


exception_handlers: ExceptionHandlersMap = {Exception: _handle}
"""Handlers to register on the Litestar app."""

"""Errors of the client library.

The tree::

    ClientError
    ├── RequestError        the broker refused a request or a frame (``code``, ``detail``)
    │   └── AuthError       credentials or tokens were refused
    └── ClosedError         the client was closed, or could not (re)connect in time
"""

from __future__ import annotations

__all__ = ["AuthError", "ClientError", "ClosedError", "RequestError"]


class ClientError(Exception):
    """Root of the client library's errors."""


class RequestError(ClientError):
    """The broker refused a request (REST) or a frame (WebSocket ``error``).

    Attributes:
        code: the broker's machine-readable code (``queue_not_found``, ``rate_limited``, ...).
        detail: its one-sentence explanation.
        status: the HTTP status of a REST error, else ``None``.
    """

    def __init__(self, code: str, detail: str, status: int | None = None) -> None:
        self.code = code
        self.detail = detail
        self.status = status
        super().__init__(f"{code}: {detail}")


class AuthError(RequestError):
    """Login, token refresh or authentication of the connection failed."""


class ClosedError(ClientError):
    """The client is closed, or lost its connection and could not get it back in time."""

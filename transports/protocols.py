"""An HTTP protocol for uvicorn that closes connections too slow to send their request.

uvicorn's keep-alive timer only runs between requests: a client that opens a
connection and trickles its request head (slowloris) or body holds it for
ever. `guarded_http_protocol` arms a deadline when a connection opens and
when each request begins, and disarms it once the whole request arrived (a
long-poll answer may then take as long as it needs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    import asyncio

__all__ = ["guarded_http_protocol"]


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    request_timeout_s = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def guarded_http_protocol(request_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a ``request_timeout_s`` deadline on each request."""
    return type(
        "GuardedHttpToolsProtocol",
        (_GuardedHttpToolsProtocol,),
        {"request_timeout_s": request_timeout_s},
    )

"""The HTTP protocol for uvicorn that bounds what one client holds: time, head bytes, connections.

uvicorn's httptools protocol has none of these limits (DESIGN.md, "Trust"):

* time: its keep-alive timer only runs between requests, so a client that
  trickles its request head (slowloris) or body holds a connection for ever.
  A deadline is armed when a connection opens and when each request begins,
  and disarmed once the whole request arrived (a long-poll answer may then
  take as long as it needs);
* head bytes: httptools gathers a header of any size before it calls back,
  so one 64 MiB header took 2.5 s of event-loop CPU and 171 MiB. Bytes are
  counted as they arrive while a head (request line and headers) is open;
  past ``max_head_bytes`` the request is answered 431 (RFC 6585 section 5)
  and nothing more of it is parsed or kept. The WebSocket upgrade request is
  an HTTP request like any other here;
* connections: at most ``max_connections_per_address`` open at once per
  client IP address, a WebSocket included until it closes. One more is
  answered 429 with ``Retry-After`` before it sends anything.

A refused client is told why, then the connection is half-closed and what it
still sends is read and dropped for a moment (`_LINGER_S`), so that its
request does not hit a closed socket and reset the answer away before the
client reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import ApiError, raw_http_error

if TYPE_CHECKING:
    import asyncio

    from broker_core.settings import Settings

__all__ = ["PeerConnections", "guarded_http_protocol", "http_protocol"]

_LINGER_S = 1.0
"""How long a refused connection's input is drained before it is closed."""
_RETRY_AFTER_S = 1


class PeerConnections:
    """Open connections per client address, for one server.

    Args:
        limit: Most connections one address may hold open at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def admit(self, peer: str) -> bool:
        """Count one more connection of ``peer``, unless it already holds `limit`."""
        count = self._open.get(peer, 0)
        if count >= self.limit:
            return False
        self._open[peer] = count + 1
        return True

    def release(self, peer: str) -> None:
        """Forget one connection of ``peer`` (it closed)."""
        count = self._open.get(peer, 0) - 1
        if count > 0:
            self._open[peer] = count
        else:
            self._open.pop(peer, None)

    def count(self, peer: str) -> int:
        """Connections ``peer`` holds open now."""
        return self._open.get(peer, 0)


class _GuardedHttpToolsProtocol(HttpToolsProtocol):
    request_timeout_s = 30.0
    max_head_bytes = 65536
    peers = PeerConnections(1024)
    _deadline: asyncio.TimerHandle | None = None
    _peer: str | None = None
    """The address this connection is counted against, until it closes."""
    _in_head = True
    _head_bytes = 0
    _refused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.ws_protocol_class is not None:
            # After an upgrade the WebSocket protocol owns the transport and is
            # the one told when it closes; it must release the address's count.
            self.ws_protocol_class = _releasing(self.ws_protocol_class)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client is not None else None
        if peer is not None:
            if not self.peers.admit(peer):
                self._refuse(
                    ApiError(
                        429,
                        "too_many_connections",
                        f"too many open connections from this address (at most {self.peers.limit})",
                    ),
                    [("retry-after", str(_RETRY_AFTER_S))],
                )
                return
            self._peer = peer
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # draining a refused connection: read, never kept
        if not self._in_head:
            self._parse(data)
            return
        room = self.max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            self._parse(data)
            return
        # This read passes the limit unless the head ends within ``room``
        # bytes: parse only those, then decide.
        self._head_bytes = self.max_head_bytes
        self._parse(data[:room])
        if self._head_open():
            self._refuse(
                ApiError(
                    431,
                    "header_too_large",
                    f"the request line and headers exceed {self.max_head_bytes} bytes",
                )
            )
            return
        if self.transport.is_closing():
            return
        protocol: Any = self.transport.get_protocol()
        # The rest is a body, the next request, or WebSocket frames after an upgrade.
        protocol.data_received(data[room:])

    def _parse(self, data: bytes) -> None:
        """uvicorn's ``data_received``, except that what follows an upgrade request is kept.

        uvicorn hands the WebSocket protocol the request alone and drops the
        rest of the read: frames a client wrote with its request, without
        waiting for the ``101``, went unanswered. They go to the WebSocket
        protocol now, which reads them once the handshake is done.
        """
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
        except httptools.HttpParserUpgrade as upgrade:
            if not self._should_upgrade():
                self._unsupported_upgrade_warning()
                return
            self.handle_websocket_upgrade()
            rest = data[upgrade.args[0] :]
            if rest and not self.transport.is_closing():
                websocket: Any = self.transport.get_protocol()
                websocket.data_received(rest)

    def _head_open(self) -> bool:
        """Whether a request head is being read (parser callbacks change it)."""
        return self._in_head

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # Bytes from here on belong to the next request's head.
        self._in_head = True
        self._head_bytes = 0
        self._disarm()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        super().handle_websocket_upgrade()
        peer, self._peer = self._peer, None
        if peer is not None:
            protocol = self.transport.get_protocol()
            protocol._wsbroker_release = lambda: self.peers.release(peer)  # type: ignore[attr-defined]

    def _release(self) -> None:
        if self._peer is not None:
            self.peers.release(self._peer)
            self._peer = None

    def _refuse(self, error: ApiError, headers: list[tuple[str, str]] | None = None) -> None:
        """Answer ``error`` (unless a response is under way) and end the connection."""
        self._refused = True
        self._disarm()
        self._release()
        transport = self.transport
        if transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            transport.write(raw_http_error(error, headers or ()))
        if transport.can_write_eof():
            transport.write_eof()
            self._deadline = self.loop.call_later(_LINGER_S, self._expired)
        else:
            transport.close()

    def _arm(self) -> None:
        if self._deadline is None and not self._refused:
            self._deadline = self.loop.call_later(self.request_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


_releasing_classes: dict[type[Any], type[Any]] = {}


def _releasing(base: type[Any]) -> type[Any]:
    """``base`` (a uvicorn WebSocket protocol) releasing its address's count when it closes."""
    cls = _releasing_classes.get(base)
    if cls is None:

        def connection_lost(self: Any, exc: Exception | None) -> None:
            release = self.__dict__.pop("_wsbroker_release", None)
            if release is not None:
                release()
            base.connection_lost(self, exc)

        cls = type(base.__name__, (base,), {"connection_lost": connection_lost})
        _releasing_classes[base] = cls
    return cls


def guarded_http_protocol(
    request_timeout_s: float,
    *,
    max_head_bytes: int = 65536,
    max_connections_per_address: int = 1024,
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the limits of the module doc.

    Call it once per server: the connections per address are counted in
    the class it returns.
    """
    return type(
        "GuardedHttpToolsProtocol",
        (_GuardedHttpToolsProtocol,),
        {
            "request_timeout_s": request_timeout_s,
            "max_head_bytes": max_head_bytes,
            "peers": PeerConnections(max_connections_per_address),
        },
    )


def http_protocol(settings: Settings) -> type[HttpToolsProtocol]:
    """`guarded_http_protocol` with the limits of ``settings``, for a server's ``http=``."""
    return guarded_http_protocol(
        settings.request_timeout_s,
        max_head_bytes=settings.max_head_bytes,
        max_connections_per_address=settings.max_connections_per_address,
    )

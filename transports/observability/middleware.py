"""`RequestMetricsMiddleware`: counts, times and names every HTTP request and WebSocket upgrade.

A raw ASGI middleware (no Request object, no body buffering). Per request it
reads the clock, picks a request id and wraps ``send``; when the response
starts it adds ``X-Process-Time`` (seconds from the request's arrival to
its status line, as text: ``0.000412``), ``X-Request-ID`` and the fixed
headers it was given (the security headers), and counts
the response by route template, method and status with its latency.

The route template is what Litestar's router stored in the scope
(``scope["path_template"]``, e.g. ``/queues/{name}``); routing has happened
by the time a response starts. A request that matched no route (a routing
404 or 405) is counted as `UNMATCHED`.

Litestar runs the ``middleware=`` of an app *after* routing, inside each
route, so a middleware listed there never sees a routing 404/405 or a CORS
preflight. `instrument` therefore wraps the app's whole ASGI handler, the
router and CORS included, so that every response carries the headers.

The request id is the client's ``X-Request-ID`` when it is a short token of
safe characters (so a gateway's id follows the request through our logs),
else a new one; it is set in `transports.logging.REQUEST_ID` while the
request runs, so every record its task logs meanwhile carries it in the JSON
log's ``extra.request_id`` (tasks it starts don't: see
`transports.logging.current_request_id`).
"""

from __future__ import annotations

import itertools
import re
import secrets
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..logging import REQUEST_ID, ServedRequest
from .telemetry import UNMATCHED, WEBSOCKET, telemetry_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from litestar import Litestar
    from litestar.types import ASGIApp

    from ..context import BrokerContext
    from .telemetry import RequestCounters

__all__ = ["PROCESS_TIME_HEADER", "REQUEST_ID_HEADER", "RequestMetricsMiddleware", "instrument"]

PROCESS_TIME_HEADER = "x-process-time"
REQUEST_ID_HEADER = "x-request-id"

_PROCESS_TIME = PROCESS_TIME_HEADER.encode()
_REQUEST_ID = REQUEST_ID_HEADER.encode()
# A sane incoming id: what gateways and tracing systems send (UUIDs, hex, ULIDs),
# nothing that could forge log structure or bloat every log line.
_SANE_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")

# Statuses counted when the app sent no response start: an HTTP app that
# returned without answering gets a 500 from the server; a WebSocket closed
# before it was accepted is refused with a 403 (ASGI spec).
_HTTP_NO_RESPONSE = 500
_WS_REFUSED = 403
_WS_ACCEPTED = 101


class RequestMetricsMiddleware:
    """Counts and times responses and gives each request an id (raw ASGI).

    Args:
        app: the ASGI app to wrap.
        counters: where responses are counted.
    """

    def __init__(
        self,
        app: ASGIApp,
        counters: RequestCounters,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.app = app
        self.counters = counters
        self.headers = tuple(headers)
        # Ids are unique per process run: a random prefix plus a counter is
        # cheaper than a UUID per request and sorts by arrival.
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    def _request_id(self, scope: Any) -> str:
        name: bytes
        value: bytes
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                if _SANE_ID.fullmatch(value):
                    return value.decode("ascii")
                break
        return f"{self._id_prefix}-{next(self._ids):x}"

    # Scope and messages are typed Any: Litestar's TypedDicts describe one event
    # type each, and this middleware reads the fields several of them share.
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            method: str = scope["method"]
        elif kind == "websocket":
            method = WEBSOCKET
        else:
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        request_id = self._request_id(scope)
        counters = self.counters
        extra = self.headers
        answered = False

        async def send_wrapper(message: Any) -> None:
            nonlocal answered
            if not answered:
                event = message["type"]
                if event in ("http.response.start", "websocket.http.response.start"):
                    status: int = message["status"]
                elif event == "websocket.accept":
                    status = _WS_ACCEPTED
                elif event == "websocket.close":
                    status = _WS_REFUSED
                else:
                    await send(message)
                    return
                answered = True
                elapsed = perf_counter() - started
                if event != "websocket.close":
                    message["headers"] = [
                        *message.get("headers", ()),
                        (_PROCESS_TIME, b"%.6f" % elapsed),
                        (_REQUEST_ID, request_id.encode("ascii")),
                        *extra,
                    ]
                counters.record(_route_of(scope), method, status, elapsed)
            await send(message)

        served = ServedRequest(request_id)
        token = REQUEST_ID.set(served)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if not answered:
                answered = True
                counters.record(_route_of(scope), method, 500, perf_counter() - started)
            raise
        finally:
            # Tasks started meanwhile keep a copy of the variable: mark it over.
            served.live = False
            REQUEST_ID.reset(token)
        if not answered:
            status = _HTTP_NO_RESPONSE if kind == "http" else _WS_REFUSED
            counters.record(_route_of(scope), method, status, perf_counter() - started)


def _route_of(scope: Any) -> str:
    template: str | None = scope.get("path_template")
    return template or UNMATCHED


def instrument(
    app: Litestar, ctx: BrokerContext, headers: Sequence[tuple[bytes, bytes]] = ()
) -> Litestar:
    """Wrap the whole of ``app`` in a `RequestMetricsMiddleware` counting into ``ctx``'s telemetry.

    ``headers`` are added to every response (the security headers): one
    wrapper around the app, not one per concern, on the hot path.

    Call it once, on the finished app, in the composition root. It wraps
    ``app.asgi_handler`` (the router behind Litestar's exception handling and
    CORS) rather than joining ``middleware=``, which Litestar applies per
    route after routing: routing 404s and 405s would go uncounted and
    without ``X-Process-Time``.

    Returns:
        ``app`` itself.
    """
    app.asgi_handler = RequestMetricsMiddleware(
        app.asgi_handler, telemetry_of(ctx).requests, headers
    )
    return app

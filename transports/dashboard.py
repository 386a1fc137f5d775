"""The dashboard: the static page served at ``/dashboard`` under a strict CSP.

The page (``transports/static/dashboard/``: ``index.html``, its scripts, its
styles and the vendored uPlot chart library) is plain files shipped in the
package: no build at install, no CDN at run time (DESIGN.md, Dashboard). It
talks only to the broker's public APIs: REST with a bearer token and the
GraphQL subscriptions over WebSocket at ``/graphql``.

The files need no token (`transports.security.OPEN_PATHS` lets ``^/dashboard``
through); everything they show is fetched with the user's token. Every
response under ``/dashboard`` carries `content_security_policy`: scripts,
styles and connections from this origin only, no inline code, no ``eval``,
no framing, and Trusted Types so that no string ever becomes HTML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar.datastructures import CacheControlHeader
from litestar.enums import ScopeType
from litestar.static_files import create_static_files_router

if TYPE_CHECKING:
    from litestar import Router
    from litestar.types import ASGIApp, Receive, Scope, Send

__all__ = ["PATH", "STATIC_DIR", "ContentSecurityPolicyMiddleware", "content_security_policy"]

PATH = "/dashboard"
STATIC_DIR = Path(__file__).resolve().parent / "static" / "dashboard"
"""The page's files, shipped as package data (``static/**/*`` in pyproject)."""

# A Host header worth repeating in the policy: a name or an IP literal and a
# port. Anything else (say a ``;`` that would start a new directive) leaves the
# WebSocket sources out and the page falls back to 'self' alone.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def content_security_policy(host: str | None) -> str:
    """The CSP of the dashboard's responses for a request to ``host``.

    ``connect-src 'self'`` covers the page's REST calls; the WebSocket of the
    GraphQL subscriptions is allowed by naming ``ws:``/``wss:`` of the same
    host, which older browsers don't infer from 'self' (CSP 3, section 6.7.2.8).
    """
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        )
    )


class ContentSecurityPolicyMiddleware:
    """Adds `content_security_policy` to the responses of the routes it wraps (raw ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        header = (b"content-security-policy", content_security_policy(host).encode("latin-1"))

        async def send_with_csp(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_csp)


def routes() -> list[Router]:
    """The route serving the page at `PATH` (``/dashboard`` and ``/dashboard/`` alike).

    One new router per app: Litestar binds a router to the app it is registered on.
    """
    return [
        create_static_files_router(
            path=PATH,
            directories=[STATIC_DIR],
            html_mode=True,
            name="dashboard",
            # Revalidate every load: an upgraded broker serves the new page at once.
            cache_control=CacheControlHeader(no_cache=True),
            middleware=[ContentSecurityPolicyMiddleware],
            opt={"exclude_from_auth": True},
            include_in_schema=False,
        )
    ]

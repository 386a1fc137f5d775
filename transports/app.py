"""The composition root: `create_app` builds the Litestar app around one `BrokerContext`.

Every transport plugs in here: the REST routes, the WebSocket endpoint, the
GraphQL schema, observability and the dashboard. Nothing else wires parts
together.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from loguru import logger

from broker_core.settings import Settings

from . import dashboard, graphql, observability, rest, ws
from .context import BrokerContext
from .errors import exception_handlers
from .observability.collector import freeze_startup_objects
from .openapi import AllowedMethodsMiddleware, openapi_config
from .security import BearerAuthMiddleware, security_headers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["VERSION", "create_app"]

VERSION = "0.1.0"


def create_app(settings: Settings | None = None, *, freeze_startup: bool = False) -> Litestar:
    """Build the broker's ASGI app; its lifespan opens and closes the broker.

    Args:
        settings: the broker's settings (from the environment when ``None``).
        freeze_startup: once the broker is open, freeze every object alive
            out of the garbage collector's passes (the serving process
            only: it is process-wide; `freeze_startup_objects`).
    """
    settings = settings or Settings.from_env()
    ctx = BrokerContext(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with ctx:
            if freeze_startup:
                frozen = freeze_startup_objects()
                logger.debug("startup objects frozen out of the collector", objects=frozen)
            yield

    cors = CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None
    app = Litestar(
        route_handlers=[
            *rest.ROUTES,
            *graphql.routes(settings),
            *observability.ROUTES,
            *ws.ROUTES,
            *dashboard.routes(),
        ],
        middleware=[DefineMiddleware(BearerAuthMiddleware, ctx=ctx), AllowedMethodsMiddleware],
        lifespan=[lifespan, observability.sampler_lifespan(ctx)],
        state=State({"ctx": ctx}),
        exception_handlers=exception_handlers,
        request_class=rest.CheckedRequest,
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors,
        logging_config=None,
        openapi_config=openapi_config(settings, VERSION),
        debug=settings.dev,
    )
    # Around routing itself (Litestar runs ``middleware=`` per route, after
    # routing): every response, routing 404s, 405s and CORS preflights
    # included, is counted and timed and carries the security headers.
    return observability.instrument(app, ctx, headers=security_headers(settings.tls))

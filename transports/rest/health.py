"""``GET /health``: the one route without a token, for load balancers."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get

from ..context import ctx_of

__all__ = ["Health", "health"]


class Health(msgspec.Struct, kw_only=True, frozen=True):
    """``ok``, or ``degraded`` with why storage refuses writes (then the status is 503)."""

    status: str
    storage: str
    detail: str | None = None


@get("/health", tags=["operations"], exclude_from_auth=True)
async def health(request: Request[Any, Any, Any]) -> Response[Health]:
    """Whether the broker can accept publishes."""
    storage = ctx_of(request).storage
    degraded = storage.degraded
    if degraded is not None:
        return Response(
            Health(status="degraded", storage=storage.name, detail=degraded), status_code=503
        )
    return Response(Health(status="ok", storage=storage.name))

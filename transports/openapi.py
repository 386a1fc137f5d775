"""The OpenAPI document at ``/schema/openapi.json`` and the docs pages beside it.

Litestar generates the document from the route handlers; `complete` then adds
what it can't know, from the facts of each operation, so that routes added
later are documented by the same rules:

* the request bodies the publish routes read themselves (`rest.BODY_SCHEMAS`)
  and the login body (JSON or an OAuth2 form);
* every error status the broker answers, each with the `Error` body: 400
  (malformed, too deep, bad encoding) and 429 everywhere; 401 and 403 on
  every route behind a token; 404 where the path names something; 409 on
  every change; 413 and 422 where there is a body or a parameter; 503 on
  publishes (storage unavailable) and ``/health`` (degraded);
* ``security: []`` on the routes that need no token, so clients (and
  Swagger's Authorize button) know which calls carry the bearer token;
* the server's own limits (``wait`` of a consume is at most
  ``max_wait_s`` seconds).

``/schema`` and ``/schema/openapi.json`` answer the document;
``/schema/swagger`` is Swagger UI, whose files (like GraphiQL's under
``--dev``) are served from ``transports/static/docs`` (`ASSETS_PATH`), never a
CDN. The pages, their files and the document are public, like ``/health``:
they describe the API and hold nothing of the broker's; every call made from
them carries the token the user pastes (Authorize).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType, OpenAPIMediaType, ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router

from .accounts import LoginRequest
from .rest import BODY_SCHEMAS

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import ASGIApp, Receive, Scope, Send

    from broker_core.settings import Settings

__all__ = [
    "ASSETS_PATH",
    "DOCS_DIR",
    "PATH",
    "AllowedMethodsMiddleware",
    "DocsPolicyMiddleware",
    "complete",
    "content_security_policy",
    "openapi_config",
]

PATH = "/schema"
ASSETS_PATH = "/schema/assets"
DOCS_DIR = Path(__file__).resolve().parent / "static" / "docs"
"""The docs pages and their vendored files (``vendor/README.md`` lists them)."""

OPEN_OPERATIONS = {
    ("/health", "get"),
    ("/auth/token", "post"),
    ("/login", "post"),
    ("/auth/refresh", "post"),
}
"""Operations that need no token (`transports.security.OPEN_PATHS`)."""

LOG_FILE_NAME = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$"
"""A log file name ``GET /logs/{filename}`` takes (`transports.observability.logs`)."""

_ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "description": "Every error answer: the status again, what went wrong, and a stable code.",
    "required": ["status_code", "detail"],
    "properties": {
        "status_code": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "examples": ["queue_not_found", "unknown_field"]},
        "extra": {},
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_DESCRIPTIONS = {
    400: "Malformed: not JSON, invalid UTF-8, nested too deep, or a parameter of the wrong type",
    401: "No token, or an expired, revoked or invalid one (or wrong credentials)",
    403: "The token's user (or scope) may not do this",
    404: "No such queue, message or user (or one the caller may not see)",
    409: "A conflict with the current state: exists, not leased, queue full, ...",
    413: "The body is larger than BROKER_MAX_BODY_BYTES",
    422: "A field or parameter is invalid; `detail` names it",
    429: "Rate limited: retry after the Retry-After header's seconds",
    503: "Storage unavailable: the message was not stored and never will be",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}
_CHANGES = {"post", "put", "patch", "delete"}
_PUBLISH_SUFFIXES = ("/messages", "/messages/batch")


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    if status == 429:
        response["headers"] = _RETRY_AFTER
    return response


def _statuses(path: str, method: str, operation: dict[str, Any]) -> list[int]:
    """The error statuses an operation may answer, from what it takes and whether it is open."""
    open_ = (path, method) in OPEN_OPERATIONS
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses = [400, 429]
    if not open_ or path in ("/auth/token", "/login", "/auth/refresh"):
        statuses.append(401)
    if not open_:
        statuses.append(403)
    if not open_:
        # A path names a queue, message or user; a body may name a queue (a
        # dead-letter queue, the queues of a fan-out) that does not exist.
        statuses.append(404)
    if not open_ and method in _CHANGES:
        statuses.append(409)
    if has_body:
        statuses.append(413)
    if has_body or parameters:
        statuses.append(422)
    if (method == "post" and path.endswith(_PUBLISH_SUFFIXES)) or path in ("/publish", "/health"):
        statuses.append(503)
    return statuses


def _structs() -> dict[str, type[msgspec.Struct]]:
    """Every msgspec Struct class by name, where the name is unique."""
    found: dict[str, list[type[msgspec.Struct]]] = {}
    pending: list[type[msgspec.Struct]] = [msgspec.Struct]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.setdefault(sub.__name__, []).append(sub)
            pending.append(sub)
    return {name: kinds[0] for name, kinds in found.items() if len(set(kinds)) == 1}


def _exact_components(schemas: dict[str, Any]) -> None:
    """Replace the components Litestar made from msgspec Structs by msgspec's own schemas.

    Litestar's loses what msgspec enforces: unknown fields refused
    (``additionalProperties: false``), bounds of optional fields, formats.
    """
    structs = _structs()
    kinds = [structs[name] for name in schemas if name in structs]
    if not kinds:
        return
    _, components = msgspec.json.schema_components(
        kinds, ref_template="#/components/schemas/{name}"
    )
    for name, schema in components.items():
        if name in schemas or name in structs:
            schemas[name] = schema


def _optional_body(operation: dict[str, Any]) -> None:
    """Mark a body the handler may go without (``JSONBody[X | None] = None``) not required.

    Litestar marks every body required; a ``null`` alternative in its schema says otherwise.
    """
    body = operation.get("requestBody")
    if body is None:
        return
    for media in body.get("content", {}).values():
        if {"type": "null"} in media.get("schema", {}).get("oneOf", ()):
            body["required"] = False


def complete(document: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A copy of Litestar's ``document`` with what it leaves out (see the module docstring)."""
    document = copy.deepcopy(document)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in BODY_SCHEMAS.items():
        schemas.setdefault(name, schema)
    _exact_components(schemas)
    (login_ref,), login_components = msgspec.json.schema_components(
        [LoginRequest], ref_template="#/components/schemas/{name}"
    )
    for name, schema in login_components.items():
        schemas.setdefault(name, schema)
    schemas["Error"] = _ERROR_SCHEMA
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if (path, method) in OPEN_OPERATIONS:
                operation["security"] = []
            if path in ("/auth/token", "/login") and "requestBody" not in operation:
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": login_ref},
                        "application/x-www-form-urlencoded": {"schema": login_ref},
                    },
                }
            _optional_body(operation)
            responses = operation["responses"]
            for status in _statuses(path, method, operation):
                key = str(status)
                if key not in responses or status in (400, 503):
                    responses[key] = _error_response(status)
            for parameter in operation.get("parameters", []):
                # Limits that are settings, so the document says this broker's values.
                if parameter.get("in") == "query" and parameter.get("name") == "wait":
                    parameter["schema"]["maximum"] = settings.max_wait_s
                if parameter.get("in") == "query" and parameter.get("name") == "lease":
                    parameter["schema"]["maximum"] = settings.max_lease_s
                if path == "/logs/{filename}" and parameter.get("name") == "filename":
                    parameter["schema"]["pattern"] = LOG_FILE_NAME
    return document


class _DocumentPlugin(OpenAPIRenderPlugin):
    """``/schema`` and ``/schema/openapi.json``: the completed document, as JSON."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(path=["/", "/openapi.json"], media_type=OpenAPIMediaType.OPENAPI_JSON)
        self.settings = settings
        self._cache: tuple[int, bytes] | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        # Litestar builds the document once and hands the same dict every time.
        if self._cache is None or self._cache[0] != id(openapi_schema):
            body = self.render_json(request, complete(openapi_schema, self.settings))
            self._cache = (id(openapi_schema), body)
        return self._cache[1]


class _PagePlugin(OpenAPIRenderPlugin):
    """A docs page: a static HTML file of `DOCS_DIR` (its scripts are files there too)."""

    def __init__(self, path: str, filename: str) -> None:
        super().__init__(path=path, media_type=MediaType.HTML)
        self.html = (DOCS_DIR / filename).read_bytes()

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return self.html


def content_security_policy() -> str:
    """The CSP of the docs: this origin only (Swagger UI styles inline, and shows data: images)."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class DocsPolicyMiddleware:
    """Adds `content_security_policy` to the responses under ``/schema`` (raw ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = (b"content-security-policy", content_security_policy().encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_csp(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, send_with_csp if scope["type"] == ScopeType.HTTP else send)


class AllowedMethodsMiddleware:
    """Answers ``OPTIONS`` with every method of the path in ``Allow`` (raw ASGI, per route).

    Litestar 2 builds the ``OPTIONS`` handler of a path with its first route
    handler, and keeps it when more handlers of the path are merged in: ``OPTIONS
    /queues`` said ``Allow: OPTIONS, POST`` though ``GET /queues`` exists too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        methods = _methods(scope["app"]).get(scope.get("path_template", ""))

        async def send_with_allow(message: Any) -> None:
            if message["type"] == "http.response.start" and methods:
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"allow"]
                message["headers"] = [*headers, (b"allow", methods)]
            await send(message)

        await self.app(scope, receive, send_with_allow)


def _methods(app: Any) -> dict[str, bytes]:
    """Each HTTP path template's methods, as an ``Allow`` value (computed once per app)."""
    cached: dict[str, bytes] | None = getattr(app.state, "allowed_methods", None)
    if cached is None:
        found: dict[str, set[str]] = {}
        for route in app.routes:
            if isinstance(route, HTTPRoute):
                found.setdefault(route.path_format, set()).update(route.methods)
        cached = {path: ", ".join(sorted(m)).encode() for path, m in found.items()}
        app.state.allowed_methods = cached
    return cached


def openapi_config(settings: Settings, version: str) -> OpenAPIConfig:
    """The app's OpenAPI settings: the document, Swagger UI and their files under `PATH`."""
    router = Router(
        PATH,
        route_handlers=[
            create_static_files_router(
                path=ASSETS_PATH.removeprefix(PATH),
                directories=[DOCS_DIR],
                name="docs-assets",
                cache_control=CacheControlHeader(no_cache=True),
                opt={"exclude_from_auth": True},
                include_in_schema=False,
            )
        ],
        include_in_schema=False,
        middleware=[DocsPolicyMiddleware],
    )
    return OpenAPIConfig(
        title="wsbroker",
        version=version,
        description=(
            "A durable HTTP/WebSocket message broker. Get a token from `POST /auth/token`"
            " and send it as `Authorization: Bearer <token>` (Authorize, in Swagger UI)."
            " Every error answers the `Error` body."
        ),
        path=PATH,
        openapi_router=router,
        render_plugins=[_DocumentPlugin(settings), _PagePlugin("/swagger", "swagger.html")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description="An access token from POST /auth/token",
                )
            },
        ),
        security=[{"bearer": []}],
    )

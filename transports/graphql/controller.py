"""The ``/graphql`` route: queries and mutations over HTTP, subscriptions over WebSocket.

Built on Strawberry's Litestar controller. HTTP requests pass the app's bearer
middleware like every REST route; WebSocket connections (which that
middleware leaves alone) speak graphql-transport-ws or the legacy graphql-ws
(Apollo) protocol, each carrying queries, mutations and subscriptions
(`transports.graphql.legacy_ws`), and authenticate in ``connection_init``
(`authenticate_connection`). The origin of a browser's WebSocket must be the
page's own or one of ``settings.allowed_origins``. GraphiQL is served at
``GET /graphql`` in development mode only, from files shipped in the package.

Every JSON document, a request body, the ``variables`` of a ``GET`` or a
WebSocket message, passes `check_json` before it is parsed: a variable with
invalid UTF-8 or a lone surrogate is 400 ``invalid_encoding``, one nested too
deep 400 ``too_deep``. Over WebSocket, a ``subscribe`` (``start``) so refused
gets an ``error`` for its id and the connection stays; a message without an
id to answer closes it with 4400, the protocol's code for an invalid message.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, cast

from litestar import Request, Response, WebSocket, get, post, websocket
from litestar.background_tasks import BackgroundTasks
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException, ValidationException, WebSocketDisconnect
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.http.websocket_origin import normalize_allowed_origins
from strawberry.litestar.controller import GraphQLController, LitestarWebSocketAdapter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.unset import UNSET

from ..decoding import check_json
from ..errors import ApiError, InvalidInput
from ..openapi import DOCS_DIR
from .context import GraphQLContext, authenticate_connection, http_context, ws_context
from .legacy_ws import LegacyGraphQLWSHandler
from .schema import build_schema

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from litestar import Controller
    from litestar.types import Dependencies
    from strawberry.types.unset import UnsetType

    from broker_core.settings import Settings

__all__ = ["PATH", "CheckedWebSocketAdapter", "routes"]

PATH = "/graphql"
_GRAPHIQL_HTML = (DOCS_DIR / "graphiql.html").read_text()
"""The GraphiQL page of development mode; its scripts are under ``/schema/assets``."""
CLOSE_INVALID_MESSAGE = 4400
"""graphql-transport-ws: the close code of a message the server can't take."""


class CheckedWebSocketAdapter(LitestarWebSocketAdapter):
    """Strawberry's Litestar WebSocket adapter, refusing messages `check_json` refuses."""

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        """Yield each parsed message; answer (or close for) the ones that break the input rule."""
        try:
            while self.ws.connection_state != "disconnect":
                text = await self.ws.receive_text()
                if text == "":  # Litestar's receive_text of a binary message
                    raise NonTextMessageReceived
                try:
                    message = self.view.decode_json(text)
                except InvalidInput as exc:
                    if not await self._refuse(text, exc):
                        return
                    continue
                except json.JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
                    continue
                yield message
        except WebSocketDisconnect:
            pass

    async def _refuse(self, text: str, exc: InvalidInput) -> bool:
        """Answer an ``error`` for the operation ``text`` starts; else close. Still open?"""
        try:
            # The stdlib's parser takes lone surrogates; deep nesting it refuses.
            envelope = json.loads(text)
        except (ValueError, RecursionError):
            envelope = None
        kind, id = (
            (envelope.get("type"), envelope.get("id")) if isinstance(envelope, dict) else ("", None)
        )
        error = {"message": exc.detail, "extensions": {"code": exc.code, "status": exc.status}}
        if isinstance(id, str) and kind in ("subscribe", "start"):
            # graphql-transport-ws answers a list of errors, the legacy graphql-ws one.
            payload = [error] if kind == "subscribe" else error
            await self.send_json({"type": "error", "id": id, "payload": payload})
            return True
        await self.close(CLOSE_INVALID_MESSAGE, f"{exc.code}: {exc.detail}"[:120])
        return False


async def _no_root_value() -> None:
    return None


async def _sub_response() -> Response[Any]:
    # Where a resolver may set the HTTP response's headers, cookies or status.
    return Response({}, background=BackgroundTasks([]))


def routes(settings: Settings) -> list[type[Controller]]:
    """The route handlers serving GraphQL at `PATH`, for `transports.app.create_app`."""

    class BrokerGraphQLController(GraphQLController):  # type: ignore[type-arg,unused-ignore]
        """GraphQL over HTTP and WebSocket.

        Strawberry's handlers are restated with their dependencies marked
        explicitly (Litestar deprecates inferred ones). In development ``GET``
        opts out of the bearer middleware so a browser can load GraphiQL; a
        query sent by ``GET`` then has its token checked by `http_context`.
        """

        path = PATH
        dependencies: ClassVar[Dependencies] = {  # type: ignore[misc]
            "context": Provide(http_context),
            "context_ws": Provide(ws_context),
            "root_value": Provide(_no_root_value),
            "response": Provide(_sub_response),
        }
        schema = build_schema(settings)
        graphql_ide = "graphiql" if settings.dev else None
        allow_queries_via_get = True
        multipart_uploads_enabled = False
        protocols = (GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL)
        connection_init_wait_timeout = timedelta(seconds=settings.ws_auth_timeout_s)
        max_subscriptions_per_connection = settings.max_consumers_per_connection
        allowed_origins = normalize_allowed_origins(settings.allowed_origins)
        websocket_adapter_class = CheckedWebSocketAdapter
        # Queries and mutations over legacy graphql-ws too, as that protocol allows.
        graphql_ws_handler_class = LegacyGraphQLWSHandler

        @property
        def graphql_ide_html(self) -> str:
            """GraphiQL from the files shipped in the package (`transports.openapi`), no CDN."""
            return _GRAPHIQL_HTML

        def decode_json(self, data: str | bytes) -> object:
            """Parse a JSON document of the client once it passes `check_json`."""
            check_json(data, settings.max_json_depth)
            return json.loads(data)

        @get(
            raises=[ValidationException, NotFoundException],
            opt={"exclude_from_auth": settings.dev},
            include_in_schema=False,
        )
        async def handle_http_get(
            self,
            request: Request[Any, Any, Any],
            context: NamedDependency[Any],
            root_value: NamedDependency[Any],
            response: NamedDependency[Response[Any]],
        ) -> Response[Any]:
            self.temporal_response = response
            return await self.execute_request(
                request=request, context=context, root_value=root_value
            )

        @post(status_code=200, include_in_schema=False)
        async def handle_http_post(
            self,
            request: Request[Any, Any, Any],
            context: NamedDependency[Any],
            root_value: NamedDependency[Any],
            response: NamedDependency[Response[Any]],
        ) -> Response[Any]:
            # Strawberry answers a JSON array (a batch) with a plain-text 400. The first
            # byte tells, without parsing the body a second time.
            json_body = request.headers.get("content-type", "").startswith("application/json")
            if json_body and (await request.body()).lstrip()[:1] == b"[":
                raise ApiError(400, "invalid_body", "a GraphQL request is one JSON object")
            self.temporal_response = response
            return await self.execute_request(
                request=request, context=context, root_value=root_value
            )

        @websocket()
        async def websocket_endpoint(
            self,
            socket: WebSocket[Any, Any, Any],
            context_ws: NamedDependency[Any],
            root_value: NamedDependency[Any],
        ) -> None:
            try:
                await self.run(request=socket, context=context_ws, root_value=root_value)
            finally:
                if isinstance(context_ws, GraphQLContext):
                    context_ws.release()

        async def on_ws_connect(self, context: Any) -> UnsetType | dict[str, object] | None:
            """Authenticate the connection from its ``connection_init`` payload."""
            assert isinstance(context, GraphQLContext), "ws_context builds the context"
            await authenticate_connection(context)
            return cast("UnsetType", UNSET)  # acknowledge with no payload

    return [BrokerGraphQLController]

"""The ``/graphql`` route: queries and mutations over HTTP, subscriptions over WebSocket.

Built on Strawberry's Litestar controller. HTTP requests pass the app's bearer
middleware like every REST route; WebSocket connections (which that
middleware leaves alone) speak graphql-transport-ws or the legacy graphql-ws
(Apollo) protocol and authenticate in ``connection_init``
(`authenticate_connection`). The origin of a browser's WebSocket must be the
page's own or one of ``settings.allowed_origins``. GraphiQL is served at
``GET /graphql`` in development mode only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, cast

from litestar import Request, Response, WebSocket, get, post, websocket
from litestar.background_tasks import BackgroundTasks
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException, ValidationException
from strawberry.http.websocket_origin import normalize_allowed_origins
from strawberry.litestar.controller import GraphQLController
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.unset import UNSET

from .context import GraphQLContext, authenticate_connection, http_context, ws_context
from .schema import build_schema

if TYPE_CHECKING:
    from litestar import Controller
    from litestar.types import Dependencies
    from strawberry.types.unset import UnsetType

    from broker_core.settings import Settings

__all__ = ["PATH", "routes"]

PATH = "/graphql"


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

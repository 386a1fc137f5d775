"""The legacy graphql-ws (Apollo ``subscriptions-transport-ws``) protocol, with every operation.

That protocol's ``start`` carries any operation: Apollo's server ran queries
and mutations as single-result operations (one ``data``, then ``complete``),
and clients rely on it, e.g. ``gql``'s ``WebsocketsTransport`` sends the
``ack`` mutation of a ``messages`` consumer over the socket it subscribes on.
Strawberry's handler runs subscriptions only; `LegacyGraphQLWSHandler` runs
each ``start`` through ``Schema.stream``, as graphql-transport-ws does, so a
mutation over either protocol behaves the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import CompleteMessage, ErrorMessage
from strawberry.types.execution import ExecutionResult, PreExecutionError

__all__ = ["LegacyGraphQLWSHandler"]


class LegacyGraphQLWSHandler(BaseGraphQLWSHandler[Any, Any]):
    """Strawberry's graphql-ws handler, running queries and mutations too (see the module)."""

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        """Run one operation: a subscription's events, or a query's or mutation's one result."""
        try:
            result_source = await self.schema.stream(
                query=query,
                variable_values=variables,
                operation_name=operation_name,
                context_value=self.context,
                root_value=self.root_value,
            )
            self.subscriptions[operation_id] = result_source
            first = True
            async for result in result_source:
                if first and isinstance(result, PreExecutionError):
                    assert result.errors, "a pre-execution error has errors"
                    await self.send_message(
                        ErrorMessage(
                            type="error", id=operation_id, payload=result.errors[0].formatted
                        )
                    )
                    return
                if isinstance(result, ExecutionResult):
                    # Incremental delivery (@defer) has no frame in this protocol.
                    await self.send_data_message(result, operation_id)
                first = False
            await self.send_message(CompleteMessage(type="complete", id=operation_id))
        except asyncio.CancelledError:
            await self.send_message(CompleteMessage(type="complete", id=operation_id))
        finally:
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)

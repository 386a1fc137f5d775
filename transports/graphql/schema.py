"""The broker's GraphQL schema, and how its errors reach clients.

Every error an operation produces gets ``extensions.code`` and
``extensions.status``: those of `transports.errors.classify` for an exception
raised by a resolver (the same mapping as REST's status and WebSocket's
codes), ``invalid_query`` / 400 for a document that fails parsing,
validation or a limit, variables that don't fit their types, or an
operation the transport doesn't carry (a subscription over HTTP). An
unexpected exception is logged with its traceback, recorded as the broker's
``last_error`` and shown as ``internal server error``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import strawberry
from graphql import GraphQLError
from loguru import logger
from strawberry.exceptions import MissingQueryError
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.tools import merge_types

from ..errors import ErrorInfo, classify, last_error
from .limits import limit_extensions
from .mutations import Mutation
from .queries import Query
from .structs import SCALARS
from .subscriptions import SubscriptionRoot
from .topics import TopicMutation, TopicQuery

if TYPE_CHECKING:
    from strawberry.types import ExecutionContext

    from broker_core.settings import Settings

__all__ = ["BrokerSchema", "build_schema", "describe_error"]

_REQUEST_ERRORS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)
"""Strawberry's errors about the request itself (no query, an operation not allowed here)."""


def describe_error(error: GraphQLError) -> ErrorInfo:
    """What ``error`` means to the client; sets its message and ``extensions`` to match."""
    extensions = error.extensions or {}
    if "code" in extensions:
        return ErrorInfo(int(extensions.get("status", 400)), str(extensions["code"]), error.message)
    original = error.original_error
    if original is None or isinstance(original, _REQUEST_ERRORS):
        info = ErrorInfo(400, "invalid_query", error.message)
    elif isinstance(original, GraphQLError) or (
        error.path is None and isinstance(original, ValueError | TypeError)
    ):
        # A variable that doesn't fit its type (graphql-core's or a scalar's parser raised).
        info = ErrorInfo(400, "invalid_query", error.message)
    else:
        info = classify(original)
        if info.code == "internal":
            logger.opt(exception=original).error("graphql operation failed", path=error.path)
            last_error.record(f"{type(original).__name__}: {original}")
        elif info.status >= 500:
            last_error.record(info.detail)
    error.message = info.detail
    error.extensions = {**extensions, "code": info.code, "status": info.status}
    return info


class BrokerSchema(strawberry.Schema):
    """A Strawberry schema whose errors carry the broker's codes (see the module doc)."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Give each error its code; log only unexpected ones."""
        for error in errors:
            describe_error(error)


def build_schema(settings: Settings) -> BrokerSchema:
    """The schema with the limits of ``settings`` (depth, complexity, introspection)."""
    extensions: list[Any] = limit_extensions(settings)
    return BrokerSchema(
        query=merge_types("Query", (Query, TopicQuery)),
        mutation=merge_types("Mutation", (Mutation, TopicMutation)),
        subscription=SubscriptionRoot,
        extensions=extensions,
        config=StrawberryConfig(scalar_map=SCALARS),
    )

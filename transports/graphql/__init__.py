"""GraphQL at ``/graphql``: the broker's queries, mutations and subscriptions (Strawberry).

`routes` returns the route handlers to add to the app. The schema's types are
derived from the same msgspec Structs REST serves (`structs`), and its
resolvers call the same `Broker` methods with the same permission checks.
"""

from __future__ import annotations

from .controller import PATH, routes
from .schema import BrokerSchema, build_schema

__all__ = ["PATH", "BrokerSchema", "build_schema", "routes"]

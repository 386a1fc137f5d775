"""What one GraphQL operation may cost: depth, complexity, size, and introspection.

Every operation is checked before it runs (so a refused one costs the broker
nothing):

* depth: ``settings.graphql_max_depth`` (Strawberry's ``QueryDepthLimiter``);
* complexity: ``settings.graphql_max_complexity`` (`ComplexityLimiter`): each
  field counts 1, and the fields under a paginated list count once per 100
  rows its ``limit`` may return, the way GitHub's GraphQL API prices
  connections per 100 nodes. Fragments are expanded, so fragment "bombs"
  count at their full size;
* size: at most ``settings.graphql_max_tokens`` lexical tokens
  (`TokenLimiter`: the parser stops at the first token past the limit, so
  a refused document costs at most the parse of that many tokens and is
  never validated) and `MAX_ALIASES` aliases (``MaxAliasesLimiter``);
* introspection is refused when ``settings.graphql_introspection`` is off.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    VariableNode,
)
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from graphql import SelectionSetNode

    from broker_core.settings import Settings

__all__ = ["MAX_ALIASES", "PAGE_ROWS", "ComplexityLimiter", "TokenLimiter", "limit_extensions"]

MAX_ALIASES = 100
"""Most aliases in a document."""
PAGE_ROWS = 100
"""Rows of a paginated list that cost as much as one selection of its fields."""


class TokenLimiter(SchemaExtension):
    """Refuse a document of more than ``max_tokens`` lexical tokens while it is parsed.

    graphql-core's parser counts tokens as it reads and stops at the first
    one past the limit: a refused document is never read further, never
    validated. Its syntax error is given the code ``too_many_tokens``.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        # graphql-core's wording (graphql/language/parser.py, Parser.advance_lexer).
        self._message = f"Document contains more than {max_tokens} tokens."

    def on_operation(self) -> Iterator[None]:
        self.execution_context.parse_options["max_tokens"] = self.max_tokens
        yield

    def on_parse(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            if self._message in error.message:
                error.message = (
                    f"the document has more than {self.max_tokens} tokens: send long "
                    "values as variables, which cost none"
                )
                error.extensions = {
                    **(error.extensions or {}),
                    "code": "too_many_tokens",
                    "status": 400,
                }


class ComplexityLimiter(SchemaExtension):
    """Refuse an operation whose complexity passes ``max_complexity`` (see the module doc).

    It runs when validation starts, with the request's variables at hand, so
    ``limit: $n`` is priced at the value sent.
    """

    def __init__(self, max_complexity: int) -> None:
        self.max_complexity = max_complexity

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.pre_execution_errors is None:
            fragments = {
                d.name.value: d
                for d in document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            pricer = _Pricer(fragments, context.variables or {})
            for definition in document.definitions:
                if not isinstance(definition, OperationDefinitionNode):
                    continue
                cost = pricer.cost(definition.selection_set)
                if cost > self.max_complexity:
                    # Set before validation: Strawberry then skips it and refuses
                    # the operation with this error.
                    context.pre_execution_errors = [
                        GraphQLError(
                            f"operation complexity {cost} exceeds the limit of "
                            f"{self.max_complexity}: select fewer fields or lower `limit`",
                            definition,
                        )
                    ]
                    break
        yield


class _Pricer:
    def __init__(
        self, fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any]
    ) -> None:
        self.fragments = fragments
        self.variables = variables
        self.priced: dict[str, int] = {}
        self.pricing: set[str] = set()

    def cost(self, selection_set: SelectionSetNode | None) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += 1 + self.pages(selection) * self.cost(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                total += self.cost(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value)
        return total

    def fragment(self, name: str) -> int:
        if name in self.priced:
            return self.priced[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.pricing:
            return 0  # unknown or cyclic: validation refuses it
        self.pricing.add(name)
        self.priced[name] = cost = self.cost(definition.selection_set)
        self.pricing.discard(name)
        return cost

    def pages(self, field: FieldNode) -> int:
        for argument in field.arguments or ():
            if argument.name.value != "limit":
                continue
            value: object = None
            if isinstance(argument.value, IntValueNode):
                value = int(argument.value.value)
            elif isinstance(argument.value, VariableNode):
                value = self.variables.get(argument.value.name.value)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return math.ceil(value / PAGE_ROWS)
        return 1


def limit_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """The schema extensions enforcing the limits of ``settings`` (made anew per operation)."""
    extensions: list[Callable[[], SchemaExtension]] = [
        functools.partial(TokenLimiter, settings.graphql_max_tokens),
        functools.partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
        functools.partial(ComplexityLimiter, settings.graphql_max_complexity),
        functools.partial(QueryDepthLimiter, max_depth=settings.graphql_max_depth),
    ]
    if not settings.graphql_introspection:
        extensions.append(DisableIntrospection)
    return extensions

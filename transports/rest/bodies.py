"""Request bodies decoded straight from bytes by msgspec, and documented in OpenAPI.

Every JSON body passes `check_json` before a decoder sees it: the bodies read
here, and those Litestar decodes for a ``data`` parameter (`CheckedRequest`).

Litestar decodes a body to Python objects before converting it, which can't
produce a ``msgspec.Raw``: the publish routes read their body themselves with
one typed decoder (faster, and the content stays the exact bytes sent). Their
OpenAPI request body refers to a schema msgspec generates from the same Struct.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from litestar import Request
from litestar.openapi.spec import OpenAPIMediaType, Operation, Reference, RequestBody

from ..decoding import check_json
from ..errors import ApiError

if TYPE_CHECKING:
    from ..context import BrokerContext

__all__ = ["BODY_SCHEMAS", "CheckedRequest", "JsonBody"]

T = TypeVar("T")

BODY_SCHEMAS: dict[str, Any] = {}
"""JSON schemas of the bodies decoded here, for the OpenAPI components."""


class JsonBody(Generic[T]):
    """A body type read with a prebuilt msgspec decoder.

    Use ``operation_class=body.operation`` on the route and ``await body.read(request)``.
    """

    def __init__(self, kind: type[T]) -> None:
        self.kind = kind
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(kind)
        (schema,), components = msgspec.json.schema_components(
            [kind], ref_template="#/components/schemas/{name}"
        )
        BODY_SCHEMAS.update(components)
        reference = Reference(ref=schema["$ref"])

        @dataclass
        class _Operation(Operation):
            def __post_init__(self) -> None:
                self.request_body = RequestBody(
                    content={"application/json": OpenAPIMediaType(schema=reference)},
                    required=True,
                )

        self.operation: type[Operation] = _Operation

    def decode(self, body: bytes, max_depth: int) -> T:
        """Decode ``body``: 400 when it isn't JSON (or breaks `check_json`), 422 when it doesn't
        fit the type."""
        check_json(body, max_depth)
        try:
            return self._decoder.decode(body)
        except msgspec.ValidationError:
            raise  # 422, `unknown_field` when it names one (`transports.errors.classify`)
        except msgspec.DecodeError as exc:
            raise ApiError(400, "malformed", f"body is not valid JSON: {exc}") from None

    async def read(self, request: Request[Any, Any, Any], limit: int, max_depth: int) -> T:
        """Read (at most ``limit`` bytes, else 413) and decode the request's body.

        Straight from the ASGI ``receive``: Litestar's ``Request.body()`` goes
        through an async generator, a measurable cost on the publish path.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await request.receive()
            if message["type"] != "http.request":
                raise ApiError(400, "client_disconnected", "the client went away mid-body")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"the body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return self.decode(chunks[0] if len(chunks) == 1 else b"".join(chunks), max_depth)


class CheckedRequest(Request[Any, Any, Any]):
    """The app's request class: a JSON body Litestar decodes passes `check_json` first.

    Litestar's own decoding would take invalid UTF-8 inside strings, and raise
    `RecursionError` (a 500) on deep nesting. A body that becomes a Struct
    (a ``data: JSONBody[...]`` parameter) is then decoded into it strictly:
    Litestar converts leniently (``"5"`` for an integer, ``0`` for ``false``),
    which would accept what the OpenAPI document (msgspec's schema of the
    Struct) says is invalid.
    """

    async def json(self) -> Any:
        """The decoded JSON body, once it is valid UTF-8 and no deeper than the limit."""
        body = await self.body()
        if body:
            ctx: BrokerContext = self.app.state.ctx
            check_json(body, ctx.settings.max_json_depth)
            field = self.route_handler.parsed_data_field
            kind = field.annotation if field is not None else None
            if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
                try:
                    _strict_decoder(kind).decode(body)
                except msgspec.ValidationError:
                    raise  # 422, `unknown_field` when it names one (`transports.errors.classify`)
                except msgspec.DecodeError as exc:
                    raise ApiError(400, "malformed", f"body is not valid JSON: {exc}") from None
        return await super().json()


@functools.cache
def _strict_decoder(kind: type[msgspec.Struct]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)

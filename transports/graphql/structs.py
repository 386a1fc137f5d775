"""GraphQL object and input types derived from the broker's msgspec Structs.

DESIGN.md (Data flow, 1) wants one model per concept, shared by REST,
WebSocket and GraphQL. Rather than a hand-written second copy of each shape,
`object_type` and `input_type` read a Struct's fields with
``msgspec.inspect`` and declare the matching Strawberry type: Strawberry
camelCases the names (``message_id`` -> ``messageId``), and a field added to a
Struct shows up in GraphQL without touching this package.

Resolvers return the Structs themselves (Strawberry reads fields with
``getattr``); inputs are turned back into Structs with `to_struct`, which runs
the same ``msgspec`` validation as a REST body.

Types map as follows:

* ``int`` -> ``Int`` when its constraints keep it within 32 bits (``priority``),
  else `Long`: ids and counters outgrow GraphQL's 32-bit ``Int`` in days at
  broker rates (GraphQL spec, section 3.5.1).
* ``msgspec.Raw`` (a message body) -> ``JSON``, decoded on output and encoded
  once on input; other dicts and unknown shapes -> ``JSON``.
* ``enum`` -> a GraphQL enum whose values are the REST values.
"""

from __future__ import annotations

import enum
import functools
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, NewType, TypeVar

import msgspec
import strawberry
from strawberry.scalars import JSON
from strawberry.utils.str_converters import to_camel_case

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["SCALARS", "Long", "input_type", "object_type", "to_struct"]

S = TypeVar("S", bound=msgspec.Struct)

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

Long = NewType("Long", int)
"""A 64-bit integer: message ids, message counts and counters."""


def _parse_long(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Long cannot represent {value!r}: it must be an integer")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"Long cannot represent {value}: it must fit in 64 bits")
    return value


SCALARS: dict[object, Any] = {
    Long: strawberry.scalar(
        name="Long",
        description="A 64-bit signed integer, written as a JSON number.",
        serialize=int,
        parse_value=_parse_long,
    )
}
"""The ``scalar_map`` of the schema's ``StrawberryConfig``."""

_objects: dict[type[msgspec.Struct], type] = {}
_enums: dict[type[enum.Enum], type[enum.Enum]] = {}


def _decode_json(value: msgspec.Raw) -> object:
    return msgspec.json.decode(value)


def _each(convert: Callable[[Any], Any], values: list[Any]) -> list[Any]:
    return [convert(value) for value in values]


def _graphql_enum(cls: type[enum.Enum]) -> type[enum.Enum]:
    """A GraphQL enum mirroring ``cls`` (a copy, so the core's class stays untouched)."""
    copy = _enums.get(cls)
    if copy is None:
        mirror = enum.Enum(cls.__name__, {member.name: member.value for member in cls})  # type: ignore[misc]
        copy = strawberry.enum(mirror, description=_summary(cls.__doc__), graphql_name_from="value")
        _enums[cls] = copy
    return copy


def _is_int32(kind: msgspec.inspect.IntType) -> bool:
    low = kind.ge if kind.ge is not None else kind.gt
    high = kind.le if kind.le is not None else kind.lt
    return low is not None and high is not None and low >= _INT32_MIN and high <= _INT32_MAX


def _annotation(kind: msgspec.inspect.Type) -> tuple[Any, Callable[[Any], Any] | None]:
    """The Python annotation Strawberry maps to the GraphQL type of ``kind``.

    Returns the annotation and, for output, how to convert the stored value
    (``None`` when it is served as is).
    """
    match kind:
        case msgspec.inspect.UnionType(types=types):
            rest = [t for t in types if not isinstance(t, msgspec.inspect.NoneType)]
            if len(rest) != 1:
                return JSON | None, None
            inner, convert = _annotation(rest[0])
            optional = len(rest) != len(types)
            return (inner | None if optional else inner), convert
        case msgspec.inspect.Metadata(type=inner):
            return _annotation(inner)
        case msgspec.inspect.IntType():
            return (int if _is_int32(kind) else Long), None
        case msgspec.inspect.FloatType():
            return float, None
        case msgspec.inspect.StrType():
            return str, None
        case msgspec.inspect.BoolType():
            return bool, None
        case msgspec.inspect.DateTimeType():
            return datetime, None
        case msgspec.inspect.RawType():
            return JSON, _decode_json
        case msgspec.inspect.LiteralType(values=values) if all(isinstance(v, str) for v in values):
            return str, None
        case msgspec.inspect.EnumType(cls=cls):
            return _graphql_enum(cls), None
        case (
            msgspec.inspect.ListType(item_type=item) | msgspec.inspect.VarTupleType(item_type=item)
        ):
            inner, convert = _annotation(item)
            if convert is None:
                return list[inner], None
            return list[inner], functools.partial(_each, convert)
        case msgspec.inspect.StructType(cls=cls):
            known = _objects.get(cls)
            if known is None:  # a nested Struct not declared on its own: named after its class
                known = object_type(cls, name=cls.__name__)
            return known, None
        case _:
            return JSON, None


def _converted_field(
    attribute: str, annotation: Any, convert: Callable[[Any], Any], description: str | None
) -> Any:
    def resolve(root: Any) -> Any:
        value = getattr(root, attribute)
        return None if value is None else convert(value)

    return strawberry.field(resolver=resolve, graphql_type=annotation, description=description)


def object_type(
    struct: type[msgspec.Struct],
    *,
    name: str,
    description: str | None = None,
    convert: Mapping[str, tuple[Any, Callable[[Any], Any]]] | None = None,
    docs: Mapping[str, str] | None = None,
) -> type:
    """Declare the GraphQL object type of ``struct``; resolvers return ``struct`` instances.

    Args:
        struct: the Struct whose fields become the type's fields.
        name: the GraphQL type name.
        description: the type's description (the Struct's docstring by default).
        convert: per field, the annotation to expose and how to convert the
            stored value to it (``at``: a Unix time served as a ``DateTime``).
        docs: descriptions of fields.

    Returns:
        The Strawberry type; use it as ``graphql_type=`` of a field.
    """
    convert = convert or {}
    docs = docs or {}
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType), "object types come from Structs"
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    for field in info.fields:
        converter: Callable[[Any], Any] | None
        if field.name in convert:
            annotation, converter = convert[field.name]
        else:
            annotation, converter = _annotation(field.type)
        annotations[field.name] = annotation
        if converter is not None:
            namespace[field.name] = _converted_field(
                field.name, annotation, converter, docs.get(field.name)
            )
        else:
            namespace[field.name] = strawberry.field(description=docs.get(field.name))
    cls = type(name, (), {"__annotations__": annotations, **namespace})
    graphql_type = strawberry.type(
        cls, name=name, description=description or _summary(struct.__doc__)
    )
    _objects[struct] = graphql_type
    return graphql_type


def input_type(
    struct: type[msgspec.Struct],
    *,
    name: str,
    description: str | None = None,
    exclude: tuple[str, ...] = (),
) -> type:
    """Declare a GraphQL input type with the fields of ``struct`` (see `to_struct`).

    A field the Struct requires is non-null; every other field may be left
    out and then takes the Struct's default.
    """
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType), "input types come from Structs"
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    for field in info.fields:
        if field.name in exclude:
            continue
        annotation = _input_annotation(field.type)
        if field.required:
            annotations[field.name] = annotation
        else:
            annotations[field.name] = annotation | None
            namespace[field.name] = strawberry.UNSET
    cls = type(name, (), {"__annotations__": annotations, **namespace})
    return strawberry.input(cls, name=name, description=description or _summary(struct.__doc__))


_inputs: dict[type[msgspec.Struct], type] = {}


def _input_annotation(kind: msgspec.inspect.Type) -> Any:
    """As `_annotation`, but a nested Struct is an input type (``<Struct>Input``)."""
    match kind:
        case msgspec.inspect.UnionType(types=types):
            rest = [t for t in types if not isinstance(t, msgspec.inspect.NoneType)]
            if len(rest) == 1 and isinstance(rest[0], msgspec.inspect.StructType):
                inner = _input_annotation(rest[0])
                return inner | None if len(rest) != len(types) else inner
        case msgspec.inspect.StructType(cls=cls):
            known = _inputs.get(cls)
            if known is None:
                known = _inputs[cls] = input_type(cls, name=f"{cls.__name__}Input")
            return known
    return _annotation(kind)[0]


def publish_struct(struct: type[S], content: object, **fields: object) -> S:
    """A publish request ``struct`` from a mutation's arguments (``None``: not given)."""
    return to_struct(
        None,
        struct,
        content=msgspec.Raw(msgspec.json.encode(content)),
        **{name: value for name, value in fields.items() if value is not None},
    )


def to_struct(value: object | None, struct: type[S], **extra: object) -> S:
    """Build ``struct`` from a GraphQL input object and extra fields, validated by msgspec.

    Fields left out of the input take the Struct's defaults; a JSON body
    (``msgspec.Raw``) is encoded once here.

    Raises:
        msgspec.ValidationError: the values break the Struct's constraints.
    """
    data: dict[str, object] = {}
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType), "to_struct builds Structs"
    for field in info.fields:
        if field.name in extra:
            data[field.name] = extra[field.name]
            continue
        if value is None:
            continue
        item = getattr(value, field.name, strawberry.UNSET)
        if item is strawberry.UNSET:
            continue
        data[field.name] = _plain(item, field.type)
    try:
        return msgspec.convert(data, struct)
    except msgspec.ValidationError as exc:
        # Name fields as the client wrote them: `$.max_attempts` -> `$.maxAttempts`.
        raise msgspec.ValidationError(_PATH.sub(_camel_path, str(exc))) from None


def _plain(value: object, kind: msgspec.inspect.Type) -> object:
    """``value`` as msgspec converts it into a field of type ``kind``."""
    if isinstance(kind, msgspec.inspect.RawType):
        return msgspec.Raw(msgspec.json.encode(value))
    if isinstance(value, enum.Enum):
        return value.value
    nested = _struct_of(kind)
    if nested is not None and value is not None:
        return {
            field.name: _plain(item, field.type)
            for field in nested.fields
            if (item := getattr(value, field.name, strawberry.UNSET)) is not strawberry.UNSET
        }
    if isinstance(value, list):
        return [v.value if isinstance(v, enum.Enum) else v for v in value]
    return value


def _struct_of(kind: msgspec.inspect.Type) -> msgspec.inspect.StructType | None:
    """The Struct type ``kind`` holds (alone or beside None), if any."""
    if isinstance(kind, msgspec.inspect.StructType):
        return kind
    if isinstance(kind, msgspec.inspect.UnionType):
        found = [t for t in kind.types if isinstance(t, msgspec.inspect.StructType)]
        return found[0] if len(found) == 1 else None
    return None


_PATH = re.compile(r"`\$[^`]*`")


def _camel_path(match: re.Match[str]) -> str:
    return re.sub(r"\.([a-z0-9]+(?:_[a-z0-9]+)+)", lambda m: "." + to_camel_case(m[1]), match[0])


def _summary(doc: str | None) -> str | None:
    """The first paragraph of a docstring, on one line."""
    if not doc:
        return None
    return " ".join(doc.strip().split("\n\n")[0].split())

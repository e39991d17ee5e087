"""Checking a protobuf message from the director before betterproto parses it.

betterproto 2.0.0b7 is lenient where a client must not be: a string field sent with a varint
wire type comes back as an int, and a length that runs past the end of the body yields a
truncated value. The director is untrusted, so every reply body is walked first: tags,
varints (at most 10 bytes), lengths within the body, wire types that the field's declared
type allows, nested messages recursively. Unknown fields are allowed, as protobuf allows
them. Anything else is a ValueError that names the message and the field.

Outgoing messages are checked the other way round (``check_outgoing``): a value the caller put
in a field must fit the field's declared type, so betterproto never fails half-way through
encoding with its own error.
"""

from __future__ import annotations

import datetime
from typing import Final

import betterproto
from betterproto.lib.google.protobuf import Duration, Timestamp

from shardclient._errors import InvalidArgumentError
from shardclient._text import describe_value, unencodable

__all__ = ["check_message", "check_outgoing", "read_varint"]

_VARINT, _FIXED64, _LENGTH, _START, _END, _FIXED32 = 0, 1, 2, 3, 4, 5
_MAX_DEPTH: Final = 32

_SCALAR_WIRE: Final = {
    **dict.fromkeys(
        ("int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "enum"), _VARINT
    ),
    **dict.fromkeys(("double", "fixed64", "sfixed64"), _FIXED64),
    **dict.fromkeys(("float", "fixed32", "sfixed32"), _FIXED32),
}


def read_varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    """The varint at ``data[at:]`` and the offset after it; ValueError when it is longer
    than 10 bytes or runs past the end."""
    value = 0
    for shift in range(0, 70, 7):
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
    raise ValueError("varint longer than 10 bytes")


def check_message(
    data: bytes | memoryview, message_type: type[betterproto.Message], depth: int = 0
) -> None:
    """ValueError unless ``data`` is a well-formed ``message_type`` body (see the module)."""
    name = message_type.__name__
    if depth > _MAX_DEPTH:
        raise ValueError(f"{name}: messages nested deeper than {_MAX_DEPTH}")
    # betterproto's per-class field table (its classproperty is typed for concrete classes)
    meta = message_type._betterproto  # type: ignore[arg-type]
    at = 0
    while at < len(data):
        try:
            tag, at = read_varint(data, at)
        except ValueError as exc:
            raise ValueError(f"{name}: bad field tag: {exc}") from None
        number, wire = tag >> 3, tag & 7
        field = meta.field_name_by_number.get(number)
        where = f"{name}.{field or f'field {number}'}"
        if number == 0:
            raise ValueError(f"{name}: field number 0")
        if wire == _VARINT:
            _, at = _value_varint(data, at, where)
        elif wire in (_FIXED64, _FIXED32):
            at += 8 if wire == _FIXED64 else 4
        elif wire == _LENGTH:
            length, at = _value_varint(data, at, where)
            if at + length > len(data):
                raise ValueError(f"{where}: {length} bytes announced, {len(data) - at} left")
            if field is not None and meta.meta_by_field_name[field].proto_type == "message":
                nested = _message_class(meta.cls_by_field[field])
                if nested is not None:
                    check_message(data[at : at + length], nested, depth + 1)
            at += length
        else:
            raise ValueError(f"{where}: wire type {wire} is not supported")
        if at > len(data):
            raise ValueError(f"{where}: truncated")
        if field is not None:
            repeated = isinstance(meta.default_gen[field](), list)
            _check_wire_type(where, meta.meta_by_field_name[field].proto_type, wire, repeated)


def _value_varint(data: bytes | memoryview, at: int, where: str) -> tuple[int, int]:
    try:
        return read_varint(data, at)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _message_class(cls: object) -> type[betterproto.Message] | None:
    """The message class a field's value is parsed with (well-known types included)."""
    if isinstance(cls, type) and issubclass(cls, betterproto.Message):
        return cls
    if cls is datetime.timedelta:
        return Duration
    if cls is datetime.datetime:
        return Timestamp
    return None


def _check_wire_type(where: str, proto_type: str, wire: int, repeated: bool) -> None:
    expected = _SCALAR_WIRE.get(proto_type, _LENGTH)
    # repeated numbers may come packed (length-delimited)
    packed = repeated and wire == _LENGTH and proto_type in _SCALAR_WIRE
    if wire != expected and not packed:
        raise ValueError(f"{where}: a {proto_type} sent with wire type {wire}")


_INT_RANGES: Final = {
    "int32": (-(2**31), 2**31 - 1),
    "sint32": (-(2**31), 2**31 - 1),
    "sfixed32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "sint64": (-(2**63), 2**63 - 1),
    "sfixed64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "fixed32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "fixed64": (0, 2**64 - 1),
}


def check_outgoing(message: betterproto.Message, where: str, depth: int = 0) -> None:
    """InvalidArgumentError naming ``where.field`` unless every field of ``message`` holds a value its
    declared type can encode: ints in range (never bool), text that UTF-8 can encode (no lone
    surrogates), the right nested message classes."""
    if depth > _MAX_DEPTH:
        raise InvalidArgumentError(
            f"{where}: messages nested deeper than {_MAX_DEPTH}", argument=where
        )
    meta = type(message)._betterproto  # type: ignore[arg-type]  # as in check_message
    for field, field_meta in meta.meta_by_field_name.items():
        value = message.__dict__.get(field)  # unset fields are betterproto placeholders
        if value is betterproto.PLACEHOLDER or (
            value is None and field_meta.proto_type == "message"
        ):
            continue
        if isinstance(meta.default_gen[field](), list):
            if not isinstance(value, list):
                raise InvalidArgumentError(
                    f"{where}.{field} must be a list, got {describe_value(value)}",
                    argument=f"{where}.{field}",
                )
            for i, item in enumerate(value):
                _check_value(item, field_meta.proto_type, meta.cls_by_field.get(field),
                             f"{where}.{field}[{i}]", depth)  # fmt: skip
        else:
            _check_value(value, field_meta.proto_type, meta.cls_by_field.get(field),
                         f"{where}.{field}", depth)  # fmt: skip


def _check_value(value: object, proto_type: str, cls: object, where: str, depth: int) -> None:
    bounds = _INT_RANGES.get(proto_type)
    if bounds is not None or proto_type == "enum":
        low, high = bounds or _INT_RANGES["int32"]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidArgumentError(
                f"{where} must be an int in {low}..{high}, got {describe_value(value)}",
                argument=where,
            )
    elif proto_type == "bool":
        if not isinstance(value, bool):
            raise InvalidArgumentError(
                f"{where} must be a bool, got {describe_value(value)}", argument=where
            )
    elif proto_type in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgumentError(
                f"{where} must be a number, got {describe_value(value)}", argument=where
            )
    elif proto_type == "string":
        if not isinstance(value, str):
            raise InvalidArgumentError(
                f"{where} must be a str, got {describe_value(value)}", argument=where
            )
        problem = unencodable(value)
        if problem is not None:
            raise InvalidArgumentError(
                f"{where} is not valid Unicode text ({problem})", argument=where
            )
    elif proto_type == "bytes":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(
                f"{where} must be bytes, got {describe_value(value)}", argument=where
            )
    elif proto_type == "message":
        expected = cls if isinstance(cls, type) else None
        if expected is not None and issubclass(expected, betterproto.Message):
            if not isinstance(value, expected):
                raise InvalidArgumentError(
                    f"{where} must be a {expected.__name__}, got {describe_value(value)}",
                    argument=where,
                )
            check_outgoing(value, where, depth + 1)
        elif expected is not None and not isinstance(value, expected):  # timedelta, datetime
            raise InvalidArgumentError(
                f"{where} must be a {expected.__name__}, got {describe_value(value)}",
                argument=where,
            )

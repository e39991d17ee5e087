"""Checks of caller-supplied arguments, shared by the client, descriptors and the GPU monitor.

Each failure names the argument (or the entry of it) at fault; the exception type is the
caller's choice where its documentation promises one, InvalidArgumentError otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet

from shardclient._errors import InvalidArgumentError
from shardclient._text import describe_value, unencodable

__all__ = ["bounded_items", "check_number", "check_text"]

_NOT_A_SEQUENCE = (str, bytes, bytearray, memoryview, Mapping, AbstractSet)


def _invalid(message: str, name: str) -> Exception:
    return InvalidArgumentError(message, argument=name)


def check_text(
    name: str,
    value: object,
    *,
    empty: bool = False,
    error: Callable[[str, str], Exception] = _invalid,
) -> str:
    """``value`` if it is a str (non-empty unless ``empty``) that UTF-8 can encode (no lone
    surrogates: it goes on the wire), else ``error(message, name)``: InvalidArgumentError
    unless the caller documents another."""
    if not isinstance(value, str) or (not empty and not value):
        kind = "a str" if empty else "a non-empty str"
        raise error(f"{name} must be {kind}, got {describe_value(value)}", name)
    problem = unencodable(value)
    if problem is not None:
        raise error(f"{name} is not valid Unicode text ({problem}): {value!r:.200}", name)
    return value


def check_number(name: str, value: object, *, minimum: float, allow_equal: bool) -> None:
    """InvalidArgumentError naming ``name`` unless ``value`` is a finite real number above
    ``minimum`` (or equal to it, with ``allow_equal``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}", argument=name)
    if not math.isfinite(value) or value < minimum or (value == minimum and not allow_equal):
        bound = ">=" if allow_equal else ">"
        raise InvalidArgumentError(
            f"{name} must be finite and {bound} {minimum}, got {value!r}", argument=name
        )


def bounded_items(
    value: object,
    *,
    where: str,
    what: str,
    limit: int,
    error: Callable[[str, str], Exception] = _invalid,
) -> list[object]:
    """The items of a sequence-like ``value`` (a list, a tuple, an array, a generator), at most
    ``limit`` of them. A bare str, bytes, number, mapping or set is refused, and so is a value
    whose iteration raises or goes on past ``limit`` (an endless iterable is never held):
    ``error(message, where)`` is raised, the message starting with ``where``."""
    refused = f"{where}: expected a sequence of {what}, got {describe_value(value)}"
    if value is None or isinstance(value, _NOT_A_SEQUENCE) or not isinstance(value, Iterable):
        raise error(refused, where)
    try:
        items = list(itertools.islice(value, limit + 1))
    except Exception as exc:  # noqa: BLE001 - whatever its __iter__ raises names the argument
        raise error(f"{refused} (iterating it raised {describe_value(exc)})", where) from None
    if len(items) > limit:
        raise error(f"{where}: more than {limit} {what}", where)
    return items

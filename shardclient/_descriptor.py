"""Shard descriptors: what an envoy tells the director about its data, checked before it is sent.

The director accepts a shard only when its shapes, as lists of *strings*, equal the configured
ones; OpenFL descriptors return lists of ints. Everything here turns whatever a descriptor returns
into the canonical wire form ('28', never '28.0', ' 28' or '+28'), or raises ShardDescriptorError
naming the field and the value. Pure functions, no I/O; no openfl import is needed.
"""

from __future__ import annotations

import inspect
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, SupportsIndex, TypeAlias, TypedDict, runtime_checkable

from shardclient._checks import bounded_items, check_text
from shardclient._client.wire import check_outgoing
from shardclient._errors import ShardDescriptorError
from shardclient._text import describe_value
from shardclient.messages import CudaDeviceInfo, NodeInfo, ShardInfo

__all__ = [
    "Dimension",
    "ShardDescriptor",
    "StaticShardDescriptor",
    "StaticShardDescriptorDict",
    "descriptor_from_shard_info",
    "shard_info_from_descriptor",
]

Dimension: TypeAlias = SupportsIndex | str
"""One dimension of a shape: an int (or numpy integer) >= 0, or a string of decimal digits."""

# Largest dimension accepted: what an array library's (int64) shape can hold.
MAX_DIMENSION: Final = 2**63 - 1
# Most dimensions in a shape (numpy's own limit) and most GPUs listed: bounds on what an
# endless iterator can make us hold.
MAX_DIMENSIONS: Final = 64
MAX_CUDA_DEVICES: Final = 1024
# Wire limits of the uint64 fields n_samples and CudaDeviceInfo.index.
_UINT64_MAX: Final = 2**64 - 1
_DIGITS: Final = re.compile(r"[0-9]+")
_ABSENT: Final = object()


@runtime_checkable
class ShardDescriptor(Protocol):
    """What shardclient reads from a shard descriptor; OpenFL's descriptor classes satisfy it.

    Read-only members, so @property (OpenFL's style) and plain attributes both match. An optional
    ``n_samples`` attribute (int or None) is sent when present; datasets are never loaded for it.
    """

    @property
    def sample_shape(self) -> Iterable[Dimension]:
        """The shape of one sample, e.g. [28, 28] or ['28', '28']."""
        ...

    @property
    def target_shape(self) -> Iterable[Dimension]:
        """The shape of one target, e.g. [1] or ['1']."""
        ...

    @property
    def dataset_description(self) -> str:
        """Free text shown to the federation's operator."""
        ...


class StaticShardDescriptorDict(TypedDict):
    """The JSON-ready form of a StaticShardDescriptor (``to_dict`` / ``from_dict``)."""

    sample_shape: list[int]
    target_shape: list[int]
    dataset_description: str
    n_samples: int | None


_DICT_KEYS: Final = ("sample_shape", "target_shape", "dataset_description", "n_samples")


def _is_bool(value: object) -> bool:
    """True for bool and numpy.bool_ (named numpy.bool in numpy 2), which must not pass as 0/1."""
    if isinstance(value, bool):
        return True
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool")


def _as_int(value: object) -> int | None:
    """The integer an int-like (int, numpy integer: anything with __index__) stands for, or None."""
    if _is_bool(value) or isinstance(value, (str, bytes, bytearray)):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - not an int, or an __index__ that raises: refused alike
        return None


def _dimension(value: object, where: str) -> int:
    """One shape dimension as a checked int; strings must be plain decimal digits."""
    number: int | None
    if isinstance(value, str):
        number = None
        # Digits only (ASCII): no sign, blanks, decimal point or exponent. Bounded by length
        # first so that int() never meets an absurdly long string.
        if _DIGITS.fullmatch(value) and len(value.lstrip("0")) <= 19:
            number = int(value)
    else:
        number = _as_int(value)
    if number is None or not 0 <= number <= MAX_DIMENSION:
        raise ShardDescriptorError(
            f"{where}: expected a non-negative integer or a string of decimal digits, "
            f"got {describe_value(value)}"
        )
    return number


def _items(value: object, where: str, what: str, limit: int) -> list[object]:
    """The elements of a sequence-like value, at most ``limit`` of them (see bounded_items)."""
    return bounded_items(value, where=where, what=what, limit=limit, error=_descriptor_error)


def _shape(value: object, where: str) -> tuple[int, ...]:
    """A whole shape as a tuple of checked ints."""
    items = _items(value, where, "dimensions", MAX_DIMENSIONS)
    return tuple(_dimension(item, f"{where}[{i}]") for i, item in enumerate(items))


def _descriptor_error(message: str, where: str) -> ShardDescriptorError:
    return ShardDescriptorError(message)


def _description(value: object) -> str:
    return check_text("dataset_description", value, empty=True, error=_descriptor_error)


def _n_samples(value: object) -> int | None:
    """None (unknown) or a count that fits the wire's uint64."""
    if value is None:
        return None
    number = _as_int(value)
    if number is None or not 0 <= number <= _UINT64_MAX:
        raise ShardDescriptorError(
            f"n_samples: expected None or a non-negative integer, got {describe_value(value)}"
        )
    return number


def _cuda_index(value: object, where: str) -> int:
    number = _as_int(value)
    if number is None or not 0 <= number <= _UINT64_MAX:
        raise ShardDescriptorError(
            f"{where}: expected a CUDA index (an integer >= 0) or a CudaDeviceInfo, "
            f"got {describe_value(value)}"
        )
    return number


def _cuda_devices(value: object) -> list[CudaDeviceInfo]:
    """CUDA indices or CudaDeviceInfo messages as fresh messages (the caller's are not shared)."""
    devices: list[CudaDeviceInfo] = []
    for i, item in enumerate(_items(value, "cuda_devices", "CUDA indices", MAX_CUDA_DEVICES)):
        where = f"cuda_devices[{i}]"
        if isinstance(item, CudaDeviceInfo):
            try:
                check_outgoing(item, where)
            except ValueError as exc:
                raise ShardDescriptorError(str(exc)) from None
            devices.append(CudaDeviceInfo().parse(bytes(item)))
        else:
            devices.append(CudaDeviceInfo(index=_cuda_index(item, where)))
    return devices


def _shard_name(value: object) -> str:
    return check_text("shard_name", value, error=_descriptor_error)


def _read(descriptor: object, name: str) -> object:
    """A descriptor attribute; a missing one or a property that raises becomes the error."""
    try:
        return getattr(descriptor, name)
    except Exception as exc:
        raise ShardDescriptorError(
            f"{name}: cannot read it from the descriptor ({type(descriptor).__name__}): "
            f"{describe_value(exc)}"
        ) from exc


def _read_n_samples(descriptor: object) -> int | None:
    """The optional n_samples attribute, never computed from a dataset."""
    # Looked up statically: finding out must not run a property (which might load data).
    if inspect.getattr_static(descriptor, "n_samples", _ABSENT) is _ABSENT:
        return None
    return _n_samples(_read(descriptor, "n_samples"))


@dataclass(frozen=True, init=False)
class StaticShardDescriptor:
    """A ShardDescriptor holding fixed values, for users without a descriptor class of their own.

    Shapes are stored as tuples of ints (what array libraries take); strings of digits are
    accepted and converted. Invalid values raise ShardDescriptorError.
    """

    sample_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    dataset_description: str = ""
    n_samples: int | None = None

    def __init__(
        self,
        sample_shape: Iterable[Dimension],
        target_shape: Iterable[Dimension],
        dataset_description: str = "",
        n_samples: SupportsIndex | None = None,
    ) -> None:
        self._assign(sample_shape, target_shape, dataset_description, n_samples)

    def _assign(
        self, sample_shape: object, target_shape: object, description: object, n_samples: object
    ) -> None:
        """Check and store every field (untyped inputs: also used by from_dict)."""
        object.__setattr__(self, "sample_shape", _shape(sample_shape, "sample_shape"))
        object.__setattr__(self, "target_shape", _shape(target_shape, "target_shape"))
        object.__setattr__(self, "dataset_description", _description(description))
        object.__setattr__(self, "n_samples", _n_samples(n_samples))

    @classmethod
    def from_descriptor(cls, descriptor: ShardDescriptor) -> StaticShardDescriptor:
        """A checked snapshot of any ShardDescriptor (its optional n_samples included)."""
        made = cls.__new__(cls)
        made._assign(
            _read(descriptor, "sample_shape"),
            _read(descriptor, "target_shape"),
            _read(descriptor, "dataset_description"),
            _read_n_samples(descriptor),
        )
        return made

    def to_dict(self) -> StaticShardDescriptorDict:
        """A JSON-ready dict: shapes as lists of ints, n_samples an int or None."""
        return {
            "sample_shape": list(self.sample_shape),
            "target_shape": list(self.target_shape),
            "dataset_description": self.dataset_description,
            "n_samples": self.n_samples,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> StaticShardDescriptor:
        """The reverse of to_dict (e.g. after json.loads); unknown keys are refused as typos."""
        if not isinstance(data, Mapping):
            raise ShardDescriptorError(f"expected a mapping, got {describe_value(data)}")
        unknown = sorted(repr(key) for key in data if key not in _DICT_KEYS)
        if unknown:
            raise ShardDescriptorError(
                f"unknown key(s) {', '.join(unknown)}; expected {', '.join(_DICT_KEYS)}"
            )
        for key in ("sample_shape", "target_shape"):
            if key not in data:
                raise ShardDescriptorError(f"{key}: missing")
        made = cls.__new__(cls)
        made._assign(
            data["sample_shape"],
            data["target_shape"],
            data.get("dataset_description", ""),
            data.get("n_samples"),
        )
        return made


def shard_info_from_descriptor(
    descriptor: ShardDescriptor,
    *,
    shard_name: str,
    cuda_devices: Iterable[SupportsIndex | CudaDeviceInfo] = (),
) -> ShardInfo:
    """The ShardInfo an envoy registers with, every field checked and shapes made canonical.

    n_samples is sent only when the descriptor has an ``n_samples`` attribute (0 otherwise).
    Raises ShardDescriptorError, naming the field and the value, for anything off.
    """
    name = _shard_name(shard_name)
    static = StaticShardDescriptor.from_descriptor(descriptor)
    return ShardInfo(
        node_info=NodeInfo(name=name, cuda_devices=_cuda_devices(cuda_devices)),
        shard_description=static.dataset_description,
        n_samples=static.n_samples or 0,
        sample_shape=[str(d) for d in static.sample_shape],
        target_shape=[str(d) for d in static.target_shape],
    )


def descriptor_from_shard_info(info: ShardInfo) -> StaticShardDescriptor:
    """The descriptor a ShardInfo describes; n_samples 0 (proto3's "unset") reads back as None."""
    if not isinstance(info, ShardInfo):
        raise ShardDescriptorError(f"expected a ShardInfo, got {describe_value(info)}")
    return StaticShardDescriptor(
        info.sample_shape,
        info.target_shape,
        info.shard_description,
        info.n_samples or None,
    )

"""Shard descriptors: the Protocol, canonical wire shapes, every rejection, and round trips."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardclient._descriptor import (
    MAX_DIMENSION,
    ShardDescriptor,
    StaticShardDescriptor,
    descriptor_from_shard_info,
    shard_info_from_descriptor,
)
from shardclient._errors import ShardClientError, ShardDescriptorError
from shardclient.messages import CudaDeviceInfo, NodeInfo, ShardInfo

# --- descriptors written the ways users write them ------------------------------------------


class OpenFLStyleInts:
    """Like openfl's DummyShardDescriptor: properties returning lists of ints."""

    def __init__(self, sample_shape: list[int], target_shape: list[int]) -> None:
        self._sample_shape = sample_shape
        self._target_shape = target_shape

    def get_dataset(self, dataset_type: str) -> list[int]:
        raise AssertionError("the dataset must never be loaded to describe a shard")

    @property
    def sample_shape(self) -> list[int]:
        return self._sample_shape

    @property
    def target_shape(self) -> list[int]:
        return self._target_shape

    @property
    def dataset_description(self) -> str:
        return "Dummy shard descriptor"


class OpenFLStyleStrings(OpenFLStyleInts):
    """String shapes (what the director compares) and a known sample count."""

    n_samples = 60000

    @property
    def sample_shape(self) -> list[str]:  # type: ignore[override]
        return ["28", "28"]

    @property
    def target_shape(self) -> list[str]:  # type: ignore[override]
        return ["1"]


class PlainAttributes:
    """No properties: plain attributes set in __init__."""

    def __init__(self, sample_shape: Any, target_shape: Any, description: Any = "plain") -> None:
        self.sample_shape = sample_shape
        self.target_shape = target_shape
        self.dataset_description = description


class UnimplementedBase:
    """Like openfl's ShardDescriptor base class: properties that raise."""

    @property
    def sample_shape(self) -> list[int]:
        raise NotImplementedError

    @property
    def target_shape(self) -> list[int]:
        raise NotImplementedError

    @property
    def dataset_description(self) -> str:
        return ""


class NoTarget:
    sample_shape = (1,)
    dataset_description = ""


def info_for(descriptor: object, **kwargs: Any) -> ShardInfo:
    """shard_info_from_descriptor with a default shard name, taking any object (for bad ones)."""
    kwargs.setdefault("shard_name", "s1")
    return shard_info_from_descriptor(descriptor, **kwargs)  # type: ignore[arg-type]


# --- the Protocol -----------------------------------------------------------------------------


def test_protocol_is_satisfied_by_properties_plain_attributes_and_static() -> None:
    # Statically (mypy) too: these assignments are what the test checks under mypy --strict.
    ints: ShardDescriptor = OpenFLStyleInts([28, 28], [1])
    strings: ShardDescriptor = OpenFLStyleStrings([], [])
    static: ShardDescriptor = StaticShardDescriptor([28, 28], [1])
    plain = PlainAttributes([28, 28], [1])
    for descriptor in (ints, strings, static, plain):
        assert isinstance(descriptor, ShardDescriptor)
    assert not isinstance(NoTarget(), ShardDescriptor)
    assert not isinstance(object(), ShardDescriptor)


# --- canonical wire form ------------------------------------------------------------------------


def test_int_shapes_become_decimal_strings() -> None:
    info = shard_info_from_descriptor(OpenFLStyleInts([28, 28], [1]), shard_name="s1")
    assert info.sample_shape == ["28", "28"]
    assert info.target_shape == ["1"]
    assert info.shard_description == "Dummy shard descriptor"
    assert info.n_samples == 0
    assert info.node_info == NodeInfo(name="s1", cuda_devices=[])


def test_string_shapes_and_n_samples() -> None:
    info = shard_info_from_descriptor(OpenFLStyleStrings([], []), shard_name="s2")
    assert (info.sample_shape, info.target_shape, info.n_samples) == (["28", "28"], ["1"], 60000)


@pytest.mark.parametrize(
    ("shape", "wire"),
    [
        ([], []),
        ((), []),
        ([0], ["0"]),
        (["028", "00"], ["28", "0"]),
        ((n for n in (3, 32, 32)), ["3", "32", "32"]),
        (range(2, 4), ["2", "3"]),
        ([MAX_DIMENSION], [str(MAX_DIMENSION)]),
        (["0" * 50 + "7"], ["7"]),
    ],
)
def test_shape_forms(shape: Any, wire: list[str]) -> None:
    info = info_for(PlainAttributes(shape, [1]))
    assert info.sample_shape == wire


def test_n_samples_absent_is_zero_and_none_is_zero() -> None:
    plain = PlainAttributes([1], [1])
    assert info_for(plain).n_samples == 0
    plain.n_samples = None  # type: ignore[attr-defined]
    assert info_for(plain).n_samples == 0
    plain.n_samples = 5  # type: ignore[attr-defined]
    assert info_for(plain).n_samples == 5


def test_cuda_devices_from_indices_and_messages() -> None:
    gpu = CudaDeviceInfo(index=1, memory_total=80, name="NVIDIA H100", cuda_version="12.4")
    info = info_for(OpenFLStyleInts([1], [1]), cuda_devices=[0, gpu, range(3)[2]])
    assert info.node_info.cuda_devices == [
        CudaDeviceInfo(index=0),
        gpu,
        CudaDeviceInfo(index=2),
    ]
    assert info.node_info.cuda_devices[1] is not gpu  # a copy: the caller's message is not shared


def test_errors_are_shardclient_and_value_errors() -> None:
    with pytest.raises(ShardDescriptorError) as caught:
        info_for(PlainAttributes([28.0], [1]))
    assert isinstance(caught.value, ShardClientError)
    assert isinstance(caught.value, ValueError)


# --- every rejection, message checked -----------------------------------------------------------

DIM = "expected a non-negative integer or a string of decimal digits, got"
SEQ = "expected a sequence of dimensions, got"


@pytest.mark.parametrize(
    ("descriptor", "message"),
    [
        (PlainAttributes([28, 28.0], [1]), f"sample_shape[1]: {DIM} 28.0 (float)"),
        (PlainAttributes([True], [1]), f"sample_shape[0]: {DIM} True (bool)"),
        (PlainAttributes([1], [False]), f"target_shape[0]: {DIM} False (bool)"),
        (PlainAttributes([-1], [1]), f"sample_shape[0]: {DIM} -1 (int)"),
        (
            PlainAttributes([MAX_DIMENSION + 1], [1]),
            f"sample_shape[0]: {DIM} {MAX_DIMENSION + 1} (int)",
        ),
        (PlainAttributes(["28.0"], [1]), f"sample_shape[0]: {DIM} '28.0' (str)"),
        (PlainAttributes([" 28"], [1]), f"sample_shape[0]: {DIM} ' 28' (str)"),
        (PlainAttributes(["28 "], [1]), f"sample_shape[0]: {DIM} '28 ' (str)"),
        (PlainAttributes(["+28"], [1]), f"sample_shape[0]: {DIM} '+28' (str)"),
        (PlainAttributes(["-1"], [1]), f"sample_shape[0]: {DIM} '-1' (str)"),
        (PlainAttributes([""], [1]), f"sample_shape[0]: {DIM} '' (str)"),
        (PlainAttributes(["28\n"], [1]), f"sample_shape[0]: {DIM} '28\\n' (str)"),
        (PlainAttributes(["²"], [1]), f"sample_shape[0]: {DIM} '²' (str)"),
        (PlainAttributes(["1e3"], [1]), f"sample_shape[0]: {DIM} '1e3' (str)"),
        (PlainAttributes([None], [1]), f"sample_shape[0]: {DIM} None (NoneType)"),
        (PlainAttributes([b"28"], [1]), f"sample_shape[0]: {DIM} b'28' (bytes)"),
        (PlainAttributes([[28]], [1]), f"sample_shape[0]: {DIM} [28] (list)"),
        (PlainAttributes(None, [1]), f"sample_shape: {SEQ} None (NoneType)"),
        (PlainAttributes("28", [1]), f"sample_shape: {SEQ} '28' (str)"),
        (PlainAttributes(28, [1]), f"sample_shape: {SEQ} 28 (int)"),
        (PlainAttributes(b"28", [1]), f"sample_shape: {SEQ} b'28' (bytes)"),
        (PlainAttributes({28: 1}, [1]), f"sample_shape: {SEQ} {{28: 1}} (dict)"),
        (PlainAttributes({28}, [1]), f"sample_shape: {SEQ} {{28}} (set)"),
        (PlainAttributes([1], "1"), f"target_shape: {SEQ} '1' (str)"),
        (
            PlainAttributes([1], [1], None),
            "dataset_description must be a str, got None (NoneType)",
        ),
        (
            PlainAttributes([1], [1], b"x"),
            "dataset_description must be a str, got b'x' (bytes)",
        ),
        (NoTarget(), "target_shape: cannot read it from the descriptor (NoTarget): AttributeError"),
        (
            UnimplementedBase(),
            "sample_shape: cannot read it from the descriptor (UnimplementedBase): NotImplementedError",
        ),
    ],
)
def test_rejected_descriptors(descriptor: object, message: str) -> None:
    with pytest.raises(ShardDescriptorError, match=f"^{re.escape(message)}"):
        info_for(descriptor)


@pytest.mark.parametrize(
    ("n_samples", "message"),
    [
        (-1, "-1 (int)"),
        (1.5, "1.5 (float)"),
        (True, "True (bool)"),
        ("10", "'10' (str)"),
        (2**64, f"{2**64} (int)"),
    ],
)
def test_rejected_n_samples(n_samples: object, message: str) -> None:
    plain = PlainAttributes([1], [1])
    plain.n_samples = n_samples  # type: ignore[attr-defined]
    expected = f"n_samples: expected None or a non-negative integer, got {message}"
    with pytest.raises(ShardDescriptorError, match=f"^{re.escape(expected)}$"):
        info_for(plain)


CUDA = "expected a CUDA index (an integer >= 0) or a CudaDeviceInfo, got"
UINT64 = "must be an int in 0..18446744073709551615, got"


@pytest.mark.parametrize(
    ("cuda_devices", "message"),
    [
        ([-1], f"cuda_devices[0]: {CUDA} -1 (int)"),
        ([0, 1.0], f"cuda_devices[1]: {CUDA} 1.0 (float)"),
        ([True], f"cuda_devices[0]: {CUDA} True (bool)"),
        (["0"], f"cuda_devices[0]: {CUDA} '0' (str)"),
        ([None], f"cuda_devices[0]: {CUDA} None (NoneType)"),
        ([CudaDeviceInfo(index=-3)], f"cuda_devices[0].index {UINT64} -3 (int)"),
        ([CudaDeviceInfo(index=1, name=5)], "cuda_devices[0].name must be a str, got 5 (int)"),  # type: ignore[arg-type]  # a wrong type on purpose
        (
            [CudaDeviceInfo(index=1, name="\ud800")],
            "cuda_devices[0].name is not valid Unicode text (surrogates not allowed)",
        ),
        (itertools.count(), "cuda_devices: more than 1024 CUDA indices"),
        (0, "cuda_devices: expected a sequence of CUDA indices, got 0 (int)"),
        ("0,1", "cuda_devices: expected a sequence of CUDA indices, got '0,1' (str)"),
        (None, "cuda_devices: expected a sequence of CUDA indices, got None (NoneType)"),
    ],
)
def test_rejected_cuda_devices(cuda_devices: object, message: str) -> None:
    with pytest.raises(ShardDescriptorError, match=f"^{re.escape(message)}$"):
        info_for(OpenFLStyleInts([1], [1]), cuda_devices=cuda_devices)


@pytest.mark.parametrize(
    ("shard_name", "message"), [("", "'' (str)"), (None, "None (NoneType)"), (7, "7 (int)")]
)
def test_rejected_shard_name(shard_name: object, message: str) -> None:
    expected = f"shard_name must be a non-empty str, got {message}"
    with pytest.raises(ShardDescriptorError, match=f"^{re.escape(expected)}$"):
        info_for(OpenFLStyleInts([1], [1]), shard_name=shard_name)


# --- numpy scalars (numpy is optional) ------------------------------------------------------------


def test_numpy_scalars() -> None:
    np = pytest.importorskip("numpy")
    array = np.zeros((2, 28, 28))
    plain = PlainAttributes(array.shape[1:], [np.int64(1)])
    plain.n_samples = np.uint32(7)  # type: ignore[attr-defined]
    info = info_for(plain, cuda_devices=[np.int32(0)])
    assert (info.sample_shape, info.target_shape, info.n_samples) == (["28", "28"], ["1"], 7)
    assert info.node_info.cuda_devices == [CudaDeviceInfo(index=0)]
    assert info_for(PlainAttributes(np.array([3, 4]), [1])).sample_shape == ["3", "4"]
    for bad in (np.float64(28.0), np.float32(1.0), np.bool_(True), np.int8(-1)):
        with pytest.raises(ShardDescriptorError, match=r"^sample_shape\[0\]: expected a non-neg"):
            info_for(PlainAttributes([bad], [1]))


# --- StaticShardDescriptor ------------------------------------------------------------------------


def test_static_descriptor_normalizes_and_is_frozen() -> None:
    static = StaticShardDescriptor(["28", 28], ("1",), "mnist", n_samples=10)
    assert static == StaticShardDescriptor((28, 28), [1], dataset_description="mnist", n_samples=10)
    assert static.sample_shape == (28, 28)
    assert static.target_shape == (1,)
    assert hash(static) == hash(StaticShardDescriptor([28, 28], [1], "mnist", 10))
    with pytest.raises(AttributeError):
        static.n_samples = 3  # type: ignore[misc]


def test_static_descriptor_validates() -> None:
    with pytest.raises(ShardDescriptorError, match=r"^sample_shape\[0\]: .* 28\.0 \(float\)$"):
        StaticShardDescriptor([28.0], [1])  # type: ignore[list-item]
    with pytest.raises(ShardDescriptorError, match=r"^n_samples: .* -2 \(int\)$"):
        StaticShardDescriptor([1], [1], n_samples=-2)


def test_static_descriptor_dict_and_json() -> None:
    static = StaticShardDescriptor([28, 28], [1], "mnist", 60000)
    as_dict = static.to_dict()
    assert as_dict == {
        "sample_shape": [28, 28],
        "target_shape": [1],
        "dataset_description": "mnist",
        "n_samples": 60000,
    }
    assert StaticShardDescriptor.from_dict(json.loads(json.dumps(as_dict))) == static
    assert StaticShardDescriptor.from_dict({"sample_shape": ["2"], "target_shape": []}) == (
        StaticShardDescriptor([2], [])
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sample_shape": [1]}, "target_shape: missing"),
        (
            {"sample_shape": [1], "target_shape": [1], "samples": 3},
            "unknown key(s) 'samples'; expected sample_shape, target_shape, "
            "dataset_description, n_samples",
        ),
        ({"sample_shape": "1", "target_shape": [1]}, f"sample_shape: {SEQ} '1' (str)"),
        ([1, 2], "expected a mapping, got [1, 2] (list)"),
    ],
)
def test_static_from_dict_rejects(data: Any, message: str) -> None:
    with pytest.raises(ShardDescriptorError, match=f"^{re.escape(message)}$"):
        StaticShardDescriptor.from_dict(data)


def test_from_descriptor_snapshots_without_loading() -> None:
    snapshot = StaticShardDescriptor.from_descriptor(OpenFLStyleStrings([], []))
    assert snapshot == StaticShardDescriptor([28, 28], [1], "Dummy shard descriptor", 60000)


def test_descriptor_from_shard_info() -> None:
    info = ShardInfo(
        node_info=NodeInfo(name="s1"),
        shard_description="d",
        n_samples=0,
        sample_shape=["28", "28"],
        target_shape=[],
    )
    assert descriptor_from_shard_info(info) == StaticShardDescriptor([28, 28], [], "d", None)
    info.sample_shape = ["28.0"]
    with pytest.raises(ShardDescriptorError, match=re.escape(f"sample_shape[0]: {DIM} '28.0'")):
        descriptor_from_shard_info(info)


# --- hypothesis round trips -----------------------------------------------------------------------

dimensions = st.integers(min_value=0, max_value=MAX_DIMENSION)
# A dimension as a descriptor may return it: an int, or a string of digits (maybe zero-padded).
dimension_forms = st.one_of(
    dimensions,
    st.tuples(dimensions, st.integers(0, 3)).map(lambda pair: "0" * pair[1] + str(pair[0])),
)
shapes = st.lists(dimension_forms, max_size=6)
n_samples_values = st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1))
devices = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=2**64 - 1),
        st.builds(
            CudaDeviceInfo,
            index=st.integers(0, 64),
            memory_total=st.integers(0, 2**64 - 1),
            name=st.text(max_size=20),
        ),
    ),
    max_size=4,
)


def canonical(shape: list[int | str]) -> tuple[int, ...]:
    return tuple(int(dim) for dim in shape)


@given(
    sample=shapes,
    target=shapes,
    description=st.text(),
    n_samples=n_samples_values,
    shard_name=st.text(min_size=1),
    cuda_devices=devices,
)
def test_round_trip_through_the_wire(
    sample: list[int | str],
    target: list[int | str],
    description: str,
    n_samples: int | None,
    shard_name: str,
    cuda_devices: list[int | CudaDeviceInfo],
) -> None:
    descriptor = PlainAttributes(sample, target, description)
    if n_samples is not None:
        descriptor.n_samples = n_samples  # type: ignore[attr-defined]
    info = shard_info_from_descriptor(descriptor, shard_name=shard_name, cuda_devices=cuda_devices)
    received = ShardInfo().parse(bytes(info))
    assert received == info
    assert received.node_info.name == shard_name
    assert [device.index for device in received.node_info.cuda_devices] == [
        device.index if isinstance(device, CudaDeviceInfo) else device for device in cuda_devices
    ]
    back = descriptor_from_shard_info(received)
    # proto3 cannot tell n_samples 0 from unset: both read back as None (unknown).
    assert back == StaticShardDescriptor(
        canonical(sample), canonical(target), description, n_samples or None
    )
    # And once canonical, the descriptor reproduces the same message.
    assert (
        shard_info_from_descriptor(
            back, shard_name=shard_name, cuda_devices=received.node_info.cuda_devices
        )
        == received
    )


@given(sample=shapes, target=shapes, description=st.text(), n_samples=n_samples_values)
def test_static_round_trip_through_json(
    sample: list[int | str], target: list[int | str], description: str, n_samples: int | None
) -> None:
    static = StaticShardDescriptor(sample, target, description, n_samples)
    assert StaticShardDescriptor.from_dict(json.loads(json.dumps(static.to_dict()))) == static


def _generated() -> Iterator[int]:
    yield 5


def test_a_generator_shape_is_read_once() -> None:
    info = info_for(PlainAttributes(_generated(), [1]))
    assert info.sample_shape == ["5"]


# --- hostile objects: every failure is a ShardDescriptorError naming the field -----------------


class _RaisingIter:
    """Like a 0-d numpy array: iterable by type, but iterating it raises."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __iter__(self) -> Iterator[int]:
        raise self.error


class _RaisingIndex:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def __index__(self) -> int:
        raise self.error


class _RaisingRepr:
    def __iter__(self) -> Iterator[int]:
        raise TypeError("iteration over a 0-d array")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (_RaisingIter(TypeError("iteration over a 0-d array")), r"^sample_shape: expected a sequence of dimensions, got .*_RaisingIter.*TypeError\('iteration over a 0-d array'\)"),
        (_RaisingIter(AttributeError("gone")), r"^sample_shape: expected a sequence .*AttributeError\('gone'\)"),
        (_RaisingRepr(), r"^sample_shape: expected a sequence of dimensions, got <_RaisingRepr instance"),
        ([_RaisingIndex(ValueError("x"))], r"^sample_shape\[0\]: expected a non-negative integer"),
        ([_RaisingIndex(AttributeError("x"))], r"^sample_shape\[0\]: expected a non-negative integer"),
        (itertools.count(), r"^sample_shape: more than 64 dimensions$"),
        ([1] * 65, r"^sample_shape: more than 64 dimensions$"),
    ],
)  # fmt: skip
def test_hostile_shapes_name_the_field(shape: object, message: str) -> None:
    with pytest.raises(ShardDescriptorError, match=message):
        info_for(PlainAttributes(shape, [1]))
    with pytest.raises(ShardDescriptorError, match=message):
        StaticShardDescriptor(shape, [1])  # type: ignore[arg-type]  # hostile on purpose


def test_a_zero_d_numpy_array_is_not_a_shape() -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(ShardDescriptorError, match=r"^sample_shape: expected a sequence of dim"):
        info_for(PlainAttributes(np.array(28), [1]))
    assert info_for(PlainAttributes([np.array(28)], [1])).sample_shape == ["28"]


@pytest.mark.parametrize(
    "huge", [["x" * 10_000_000] * 3, b"\xff" * 50_000_000], ids=["str", "bytes"]
)
def test_a_huge_value_is_described_briefly(huge: object) -> None:
    # an error message must not hold (or build) its whole repr
    with pytest.raises(ShardDescriptorError) as caught:
        info_for(PlainAttributes([huge], [1]))
    assert len(str(caught.value)) < 300


def test_shard_name_with_a_lone_surrogate() -> None:
    with pytest.raises(ShardDescriptorError, match=r"^shard_name is not valid Unicode text"):
        info_for(PlainAttributes([1], [1]), shard_name="envoy-\ud800")


_anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
    | st.builds(_RaisingIter, st.sampled_from([TypeError("t"), ValueError("v"), KeyError("k")]))
    | st.builds(_RaisingIndex, st.sampled_from([TypeError("t"), ValueError("v"), OverflowError()]))
    | st.builds(CudaDeviceInfo, index=st.integers(), name=st.text() | st.integers()),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)  # fmt: skip


@given(
    sample=_anything, target=_anything, description=_anything, shard_name=_anything,
    cuda_devices=_anything, n_samples=_anything,
)  # fmt: skip
def test_any_input_gives_a_descriptor_error_or_a_valid_shard_info(
    sample: object, target: object, description: object, shard_name: object,
    cuda_devices: object, n_samples: object,
) -> None:  # fmt: skip
    descriptor = PlainAttributes(sample, target, description)
    descriptor.n_samples = n_samples  # type: ignore[attr-defined]
    try:
        info = info_for(descriptor, shard_name=shard_name, cuda_devices=cuda_devices)
    except ShardDescriptorError as exc:
        assert len(str(exc)) < 1000
        return
    assert ShardInfo().parse(bytes(info)) == info  # whatever passed encodes and reads back
    try:
        static = StaticShardDescriptor.from_dict(
            {"sample_shape": sample, "target_shape": target, "dataset_description": description}
        )
    except ShardDescriptorError:
        return
    assert static.to_dict()["sample_shape"] == [int(d) for d in info.sample_shape]

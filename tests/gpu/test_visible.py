"""CUDA_VISIBLE_DEVICES parsing and resolution, as CUDA does them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardclient._gpu.visible import (
    DeviceRef,
    GpuUuid,
    MigDevice,
    MigTriple,
    MigUuid,
    Ordinal,
    bare_uuid,
    parse_visible_devices,
    resolve_visible,
)

A = "GPU-87bc3e16-1d86-3e32-85bf-81356808572e"
B = "GPU-87bc9999-0000-0000-0000-000000000000"
C = "GPU-c0ffee00-0000-0000-0000-000000000000"
GPUS = [A, B, C]


def ordinals(value: str | None) -> list[int] | None:
    spec = parse_visible_devices(value)
    if spec.entries is None:
        return None
    return [e.value for e in spec.entries if isinstance(e, Ordinal)]


def visible(value: str | None, gpus: list[str | None] | None = None) -> list[int]:
    spec = parse_visible_devices(value)
    refs = resolve_visible(spec, GPUS if gpus is None else gpus).refs
    return [r.gpu for r in refs]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0,1", [0, 1]),
        ("2,1", [2, 1]),
        ("0,abc,1", [0]),
        ("0,2,-1,1", [0, 2]),
        ("-1", []),
        ("", []),
        (" 1", [1]),
        ("1 , 2", [1, 2]),
        ("+1", [1]),
        ("1gpu2,2ampere", [1, 2]),
        ("0,,1", [0]),
        (",0", []),
        ("0x1", [0]),
    ],
)
def test_integer_lists_parse_like_cuda(value: str, expected: list[int]) -> None:
    assert ordinals(value) == expected


def test_unset_means_every_device_and_empty_means_none() -> None:
    assert parse_visible_devices(None).entries is None
    assert visible(None) == [0, 1, 2]
    empty = parse_visible_devices("")
    assert empty.entries == ()
    assert empty.note is not None and "empty" in empty.note
    assert visible("") == []


def test_parsing_records_where_it_stopped() -> None:
    spec = parse_visible_devices("0,abc,1")
    assert spec.note is not None and "'abc'" in spec.note


def test_uuid_and_mig_entries_parse_by_prefix() -> None:
    spec = parse_visible_devices(f"{A},MIG-5d1b,MIG-{A}/1/0,MIG-GPU-87/x/0,0")
    assert spec.entries == (GpuUuid(A), MigUuid("MIG-5d1b"), MigTriple(A, 1, 0, f"MIG-{A}/1/0"))
    assert spec.note is not None and "MIG-GPU-87/x/0" in spec.note


def test_a_device_named_twice_in_the_same_form_makes_the_whole_value_invalid() -> None:
    for value in ("0,0", "1,2,01", "2, 2", f"{A},{A}", f"{A},{A[:13]}", f"1,{C},{C[:6]}"):
        resolution = resolve_visible(parse_visible_devices(value), GPUS)
        assert resolution.refs == (), value
        assert resolution.note is not None and "invalid" in resolution.note


def test_a_device_named_again_in_the_other_form_stays_once_and_ends_the_list() -> None:
    for value in (f"0,{A[:12]},1", f"{A},0,1"):
        resolution = resolve_visible(parse_visible_devices(value), GPUS)
        assert resolution.refs == (DeviceRef(0),), value
        assert resolution.note is not None and "earlier entry" in resolution.note


def test_a_duplicate_after_the_list_ended_does_not_count() -> None:
    assert visible("0,-1,0") == [0]
    assert visible("0,GPU-bogus,0") == [0]


def test_uuid_hex_digits_compare_in_any_case_but_the_type_prefix_does_not() -> None:
    assert visible(A.upper()) == [0]
    assert visible("GPU-C0FF") == [2]
    assert visible("gpu-c0ff,0") == []


def test_uuid_entries_lose_trailing_whitespace_only_and_need_some_digits() -> None:
    assert visible(f"1, {A}") == [1]
    assert visible(f" {A}") == []
    assert visible(f"{A} ,{C}\t") == [0, 2]
    for value in ("GPU-", "MIG-", "MIG-GPU-/1/0", "1,GPU-,0"):
        assert parse_visible_devices(value).note is not None, value
    assert visible("1,GPU-,0") == [1]


def test_uuids_match_by_unique_prefix() -> None:
    assert visible(f"{C},{A}") == [2, 0]
    assert visible("GPU-c0f,GPU-87bc3") == [2, 0]


def test_an_ambiguous_or_unknown_uuid_ends_the_list_and_says_why() -> None:
    ambiguous = resolve_visible(parse_visible_devices("2,GPU-87bc,0"), GPUS)
    assert [r.gpu for r in ambiguous.refs] == [2]
    assert ambiguous.note is not None
    assert "ambiguous" in ambiguous.note and A in ambiguous.note and B in ambiguous.note
    unknown = resolve_visible(parse_visible_devices("1,GPU-bogus,0"), GPUS)
    assert [r.gpu for r in unknown.refs] == [1]
    assert unknown.note is not None and "'GPU-bogus' matches no device" in unknown.note


def test_an_index_past_the_last_gpu_ends_the_list() -> None:
    resolution = resolve_visible(parse_visible_devices("1,3,0"), GPUS)
    assert [r.gpu for r in resolution.refs] == [1]
    assert resolution.note is not None and "'3' is past the last GPU (3 present)" in resolution.note


def test_unreadable_gpus_keep_their_position_but_match_no_uuid() -> None:
    assert visible("1,0", [A, None]) == [1, 0]
    assert visible("GPU-8", [A, None]) == [0]


def test_mig_devices_resolve_by_uuid_or_by_parent_and_instance_ids() -> None:
    migs = [
        MigDevice(gpu=1, slot=0, uuid="MIG-aaaa-1111", gpu_instance=1, compute_instance=0),
        MigDevice(gpu=1, slot=1, uuid="MIG-bbbb-2222", gpu_instance=2, compute_instance=0),
    ]
    spec = parse_visible_devices(f"MIG-bbbb,MIG-{B}/1/0")
    assert spec.needs_mig and not spec.has_ordinals
    assert resolve_visible(spec, GPUS, migs).refs == (DeviceRef(1, 1), DeviceRef(1, 0))
    missing = resolve_visible(parse_visible_devices(f"MIG-{B}/3/0"), GPUS, migs)
    assert missing.refs == () and missing.note is not None and "matches no device" in missing.note


def test_bare_uuid_drops_the_type_prefix() -> None:
    assert bare_uuid(A) == A[4:]
    assert bare_uuid("MIG-1234") == "1234"
    assert bare_uuid("1234") == "1234"


# Properties over arbitrary values.

index_lists = st.lists(st.integers(0, 10**6), unique=True, max_size=12)
junk = st.text(alphabet="abcxyz-_ /.;", min_size=0, max_size=6).filter(
    lambda s: not s.strip().lstrip("+")[:1].isdigit() and not s.strip().startswith(("GPU-", "MIG-"))
)
spaces = st.text(alphabet=" \t", max_size=2)


@given(st.text())
def test_parsing_never_raises(value: str) -> None:
    spec = parse_visible_devices(value)
    assert spec.entries is not None
    assert len(spec.entries) <= value.count(",") + 1


@given(index_lists)
def test_distinct_indices_round_trip(indices: list[int]) -> None:
    if indices:
        assert ordinals(",".join(map(str, indices))) == indices


@given(index_lists, junk, st.lists(st.integers(0, 9)))
def test_an_invalid_entry_hides_everything_after_it(
    before: list[int], bad: str, after: list[int]
) -> None:
    value = ",".join([*map(str, before), bad, *map(str, after)])
    assert ordinals(value) == before


@given(index_lists, st.data())
def test_whitespace_around_entries_does_not_matter(indices: list[int], data: st.DataObject) -> None:
    if not indices:
        return
    padded = ",".join(f"{data.draw(spaces)}{i}{data.draw(spaces)}" for i in indices)
    assert ordinals(padded) == indices


@given(st.lists(st.integers(0, 2), min_size=1, max_size=6))
def test_resolution_is_the_list_or_nothing_when_a_device_repeats(indices: list[int]) -> None:
    refs = resolve_visible(parse_visible_devices(",".join(map(str, indices))), GPUS).refs
    if len(set(indices)) == len(indices):
        assert [r.gpu for r in refs] == indices
    else:
        assert refs == ()

"""The hand-written health-check encoding equals betterproto's, byte for byte and value for value."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardclient.codec import DirectorCodec, decode_health_check_period, encode_envoy_status
from shardclient.messages import (
    CudaDeviceInfo,
    UpdateEnvoyStatusRequest,
    UpdateEnvoyStatusResponse,
)

uint64 = st.integers(min_value=0, max_value=2**64 - 1)
devices = st.builds(
    CudaDeviceInfo, index=uint64, memory_total=uint64, memory_utilized=uint64,
    device_utilization=st.text(), cuda_driver_version=st.text(), cuda_version=st.text(),
    name=st.text(),
)


@given(name=st.text(), running=st.booleans(), cuda=st.lists(devices, max_size=4))
def test_request_encoding_matches_betterproto(
    name: str, running: bool, cuda: list[CudaDeviceInfo]
) -> None:
    expected = bytes(
        UpdateEnvoyStatusRequest(name=name, is_experiment_running=running, cuda_devices=cuda)
    )
    assert encode_envoy_status(name, running, cuda) == expected


@given(seconds=st.integers(min_value=-(2**40), max_value=2**40),
       nanos=st.integers(min_value=0, max_value=999_999_999))
def test_period_decoding_matches_betterproto(seconds: int, nanos: int) -> None:
    period = timedelta(seconds=seconds, microseconds=nanos // 1000)
    body = bytes(UpdateEnvoyStatusResponse(health_check_period=period))
    decoded = UpdateEnvoyStatusResponse().parse(body).health_check_period
    assert decode_health_check_period(body) == decoded.days * 86400 + decoded.seconds


def test_unknown_fields_are_skipped_and_repeated_ones_merge() -> None:
    duration = b"\x08\x07"  # seconds = 7
    body = (
        b"\x10\x05"  # unknown varint field 2
        + b"\x1a\x03abc"  # unknown length-delimited field 3
        + b"\x0a\x02" + duration
        + b"\x0a\x02\x10\x05"  # the field again with only nanos: seconds stays 7
        + b"\x25\x00\x00\x00\x00"  # unknown fixed32 field 4
    )
    assert decode_health_check_period(body) == 7
    assert decode_health_check_period(b"") == 0


@pytest.mark.parametrize("body", [b"\x0a", b"\x0a\x05\x08", b"\x08\xff", b"\x0b", b"\x0a\x01\x0f"])
def test_malformed_bodies_raise_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_health_check_period(body)


def test_codec_passes_bytes_through_and_delegates_messages() -> None:
    codec = DirectorCodec()
    assert codec.encode(b"raw", bytes) == b"raw"
    assert codec.decode(b"raw", bytes) == b"raw"
    message = UpdateEnvoyStatusRequest(name="x")
    assert codec.encode(message, UpdateEnvoyStatusRequest) == bytes(message)
    assert codec.decode(bytes(message), UpdateEnvoyStatusRequest).name == "x"
    with pytest.raises(TypeError):
        codec.encode("text", bytes)

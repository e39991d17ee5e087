"""Replies from an untrusted director: any bytes give a well-typed message or a
ProtocolError (DirectorProtocolError to callers), never a misread value."""

from __future__ import annotations

import betterproto
import pytest
from grpclib.exceptions import ProtocolError
from hypothesis import given
from hypothesis import strategies as st

from shardclient._client.interactive_aio import cuda_device_messages
from shardclient._client.transport import _ReplyCodec
from shardclient.messages import (
    CudaDeviceInfo,
    SetExperimentFailedResponse,
    UpdateEnvoyStatusResponse,
    UpdateShardInfoResponse,
    WaitExperimentResponse,
)

REPLIES: list[type[betterproto.Message]] = [
    UpdateShardInfoResponse, UpdateEnvoyStatusResponse, WaitExperimentResponse,
    SetExperimentFailedResponse,
]  # fmt: skip


@given(data=st.binary(max_size=64), kind=st.sampled_from(REPLIES))
def test_any_reply_bytes_decode_to_a_typed_message_or_a_protocol_error(
    data: bytes, kind: type[betterproto.Message]
) -> None:
    try:
        message = _ReplyCodec().decode(data, kind)
    except ProtocolError:
        return
    assert isinstance(message, kind)
    if isinstance(message, WaitExperimentResponse):
        assert isinstance(message.experiment_name, str)
    if isinstance(message, UpdateShardInfoResponse):
        assert isinstance(message.accepted, bool)
    assert isinstance(bytes(message), bytes)  # it serializes again: nothing mistyped inside


@given(st.one_of(st.integers(), st.booleans(), st.floats(), st.text(), st.none()))
def test_gpu_readings_out_of_range_or_mistyped_are_named(value: object) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64
    try:
        (message,) = cuda_device_messages([{"index": 0, "memory_total": value}])
    except ValueError as exc:
        assert not ok and "cuda_devices_info[0].memory_total" in str(exc)
        return
    assert ok and message.memory_total == value
    assert isinstance(bytes(message), bytes)  # encodes: a valid uint64


def test_messages_built_elsewhere_are_range_checked_too() -> None:
    with pytest.raises(ValueError, match=r"cuda_devices_info\[0\].memory_total"):
        cuda_device_messages([CudaDeviceInfo(index=0, memory_total=2**70)])
    with pytest.raises(ValueError, match=r"cuda_devices_info\[0\].index"):
        cuda_device_messages([CudaDeviceInfo(index=-1)])

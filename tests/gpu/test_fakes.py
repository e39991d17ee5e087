"""The in-memory NVML of tests.helpers.gpu behaves as NVML does where GpuMonitor can tell."""

from __future__ import annotations

import pytest

from shardclient._gpu.nvml import MemoryInfo, NvmlBackend, NvmlCode, NvmlError
from tests.helpers.gpu import H200_NAME, H200_TOTAL, H200_USED_V1, H200_USED_V2, FakeNvml


def test_the_fake_is_an_nvml_backend() -> None:
    backend: NvmlBackend = FakeNvml()
    backend.init()
    handle = backend.device_handle(0)
    assert backend.memory_v1(handle) == MemoryInfo(H200_TOTAL, H200_USED_V1)
    assert backend.memory_v2(handle) == MemoryInfo(H200_TOTAL, H200_USED_V2)
    assert backend.name(handle) == H200_NAME


def test_the_fake_fails_like_nvml_outside_init_and_for_bad_indices() -> None:
    fake = FakeNvml()
    with pytest.raises(NvmlError) as uninit:
        fake.device_count()
    assert uninit.value.code == NvmlCode.UNINITIALIZED
    fake.init()
    with pytest.raises(NvmlError) as bad:
        fake.device_handle(1)
    assert bad.value.code == NvmlCode.INVALID_ARGUMENT

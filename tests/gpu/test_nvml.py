"""PynvmlBackend: nvidia-ml-py's results and exceptions cross into shardclient's types.

The stand-in module below raises nvidia-ml-py's real exception classes (importable without a
GPU), so the translation is tested exactly; the last test runs the real library where NVML
cannot load.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pynvml
import pytest

from shardclient import GpuInfoError
from shardclient._gpu import GpuMonitor
from shardclient._gpu.nvml import DeviceHandle, MemoryInfo, NvmlCode, NvmlError, PynvmlBackend


@dataclass
class _Memory:
    total: int
    used: int


@dataclass
class _Utilization:
    gpu: int
    memory: int


def _decoding(function: Any) -> Any:
    """Like nvidia-ml-py's convertStrBytes: strict UTF-8 decode of a bytes result."""

    @functools.wraps(function)
    def wrapper(*args: Any) -> Any:
        result = function(*args)
        return result.decode() if isinstance(result, bytes) else result

    return wrapper


class StandIn:
    """The pynvml functions PynvmlBackend calls, over one H200; ``fail`` maps name -> NVML code."""

    NVMLError = pynvml.NVMLError
    nvmlMemory_v2 = pynvml.nvmlMemory_v2

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.fail = fail or {}

    def _check(self, name: str) -> None:
        if name in self.fail:
            raise pynvml.NVMLError(self.fail[name])

    def nvmlInit(self) -> None:
        self._check("nvmlInit")

    def nvmlShutdown(self) -> None:
        self._check("nvmlShutdown")

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        if index != 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return "handle0"

    def nvmlDeviceGetMemoryInfo(self, handle: object, version: int | None = None) -> _Memory:
        if version is None:
            return _Memory(150754820096, 644939776)
        self._check("v2")
        assert version == pynvml.nvmlMemory_v2
        return _Memory(150754820096, 0)

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> _Utilization:
        self._check("nvmlDeviceGetUtilizationRates")
        return _Utilization(37, 5)

    def nvmlDeviceGetMigMode(self, handle: object) -> list[int]:
        self._check("nvmlDeviceGetMigMode")
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: object) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: object, slot: int) -> object:
        if slot:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return "mig0"

    def nvmlDeviceGetGpuInstanceId(self, handle: object) -> int:
        return 3

    def nvmlDeviceGetComputeInstanceId(self, handle: object) -> int:
        return 0


@_decoding
def _name(handle: object) -> bytes:
    return b"NVIDIA \xff H200"


@_decoding
def _uuid(handle: object) -> bytes:
    return b"GPU-87bc3e16-1d86-3e32-85bf-81356808572e"


@_decoding
def _driver() -> bytes:
    return b"580.159.04"


StandIn.nvmlDeviceGetName = staticmethod(_name)  # type: ignore[attr-defined]
StandIn.nvmlDeviceGetUUID = staticmethod(_uuid)  # type: ignore[attr-defined]
StandIn.nvmlSystemGetDriverVersion = staticmethod(_driver)  # type: ignore[attr-defined]


def backend(**fail: int) -> PynvmlBackend:
    b = PynvmlBackend(StandIn(fail))
    b.init()
    return b


def test_readings_cross_as_plain_values() -> None:
    b = backend()
    h = b.device_handle(0)
    assert b.device_count() == 1
    assert b.cuda_driver_version() == 13000
    assert b.driver_version() == b"580.159.04"
    assert b.uuid(h) == b"GPU-87bc3e16-1d86-3e32-85bf-81356808572e"
    assert b.memory_v2(h) == MemoryInfo(150754820096, 0)
    assert b.memory_v1(h) == MemoryInfo(150754820096, 644939776)
    assert b.utilization(h) == 37
    assert b.mig_enabled(h) is True
    assert b.max_mig_devices(h) == 7
    assert b.mig_ids(b.mig_device(h, 0)) == (3, 0)


def test_names_are_read_beneath_the_strict_decoder() -> None:
    with pytest.raises(UnicodeDecodeError):
        _name("handle0")  # what nvidia-ml-py itself would do with this name
    assert backend().name(DeviceHandle("handle0")) == b"NVIDIA \xff H200"


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("nvmlInit", pynvml.NVML_ERROR_LIBRARY_NOT_FOUND),
        ("nvmlInit", pynvml.NVML_ERROR_DRIVER_NOT_LOADED),
        ("nvmlDeviceGetUtilizationRates", pynvml.NVML_ERROR_NOT_SUPPORTED),
        ("nvmlDeviceGetUtilizationRates", pynvml.NVML_ERROR_GPU_IS_LOST),
        ("v2", pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH),
        ("nvmlDeviceGetCount", pynvml.NVML_ERROR_UNKNOWN),
    ],
)
def test_nvml_errors_become_nvml_error_with_the_code(where: str, code: int) -> None:
    b = PynvmlBackend(StandIn({where: code}))
    with pytest.raises(NvmlError) as caught:
        b.init()
        h = b.device_handle(0)
        b.utilization(h)
        b.memory_v2(h)
        b.device_count()
    assert caught.value.code == code
    assert caught.value.reason == str(pynvml.NVMLError(code))


def test_an_invalid_index_is_invalid_argument() -> None:
    with pytest.raises(NvmlError) as caught:
        backend().device_handle(5)
    assert caught.value.code == NvmlCode.INVALID_ARGUMENT


def test_an_nvidia_ml_py_without_v2_memory_reads_as_function_not_found() -> None:
    class NoVersionArgument(StandIn):
        def nvmlDeviceGetMemoryInfo(self, handle: object) -> _Memory:  # type: ignore[override]
            return _Memory(1, 1)

    class NoV2Constant(StandIn):
        nvmlMemory_v2 = None

    for module in (NoVersionArgument(), NoV2Constant()):
        b = PynvmlBackend(module)
        b.init()
        with pytest.raises(NvmlError) as caught:
            b.memory_v2(DeviceHandle("handle0"))
        assert caught.value.code == NvmlCode.FUNCTION_NOT_FOUND
    with GpuMonitor(backend=PynvmlBackend(NoVersionArgument()), visible_devices=None) as mon:
        assert mon.devices()[0].memory_utilized == 1  # v1, the only reading there is


def test_the_monitor_over_the_stand_in_reports_like_nvidia_smi() -> None:
    with GpuMonitor(backend=PynvmlBackend(StandIn()), visible_devices=None) as mon:
        [info] = mon.devices()
    assert (info.memory_utilized, info.device_utilization, info.name, info.cuda_version) == (
        0,
        "37%",
        "NVIDIA \ufffd H200",
        "13.0",
    )


def test_real_nvidia_ml_py_without_nvml_degrades() -> None:
    probe = PynvmlBackend()
    try:
        probe.init()
    except NvmlError as exc:
        reason = exc.reason
    else:
        probe.shutdown()
        pytest.skip("NVML loads here; the degraded path needs a machine without it")
    with GpuMonitor() as mon:
        assert not mon.available
        assert mon.devices() == []
        assert mon.unavailable_reason is not None and reason in mon.unavailable_reason
        with pytest.raises(GpuInfoError, match=f"CUDA device 0: NVML is unavailable: {reason}"):
            mon.devices([0])

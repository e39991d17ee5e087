"""An in-memory NVML (an NvmlBackend) reproducing readings measured on an NVIDIA H200.

It behaves as NVML does where GpuMonitor can tell: calls before init or after shutdown fail with
UNINITIALIZED, a bad index with INVALID_ARGUMENT, an empty MIG slot with NOT_FOUND, a lost GPU
with GPU_IS_LOST on every query. Each call is counted in ``calls``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shardclient._gpu.nvml import DeviceHandle, MemoryInfo, NvmlCode, NvmlError

# Measured on an NVIDIA H200, driver 580.159.04, CUDA 13.0, nvidia-ml-py 13.610.
H200_UUID = "GPU-87bc3e16-1d86-3e32-85bf-81356808572e"
H200_NAME = "NVIDIA H200"
H200_TOTAL = 150754820096
H200_USED_V1 = 644939776  # includes driver-reserved memory: 615 MiB
H200_USED_V2 = 0  # what nvidia-smi shows
H200_DRIVER = "580.159.04"
H200_CUDA = 13000

REASONS = {
    NvmlCode.UNINITIALIZED: "Uninitialized",
    NvmlCode.INVALID_ARGUMENT: "Invalid Argument",
    NvmlCode.NOT_SUPPORTED: "Not Supported",
    NvmlCode.NOT_FOUND: "Not Found",
    NvmlCode.DRIVER_NOT_LOADED: "Driver Not Loaded",
    NvmlCode.LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NvmlCode.FUNCTION_NOT_FOUND: "Function Not Found",
    NvmlCode.GPU_IS_LOST: "GPU is lost",
    NvmlCode.UNKNOWN: "Unknown Error",
}


def nvml_error(code: NvmlCode) -> NvmlError:
    return NvmlError(code, REASONS.get(code, "NVML error"))


@dataclass
class FakeMig:
    """A MIG device of a FakeGpu."""

    uuid: str
    gpu_instance: int
    compute_instance: int
    name: str = "NVIDIA H200 MIG 1g.18gb"
    total: int = 16 * 2**30
    used: int = 2**20


@dataclass
class FakeGpu:
    """One GPU's readings; ``*_error`` makes that query fail with that NVML code."""

    uuid: str = H200_UUID
    name: str | bytes = H200_NAME
    total: int = H200_TOTAL
    used_v1: int = H200_USED_V1
    used_v2: int = H200_USED_V2
    utilization: int = 0
    utilization_error: NvmlCode | None = None
    memory_v2_error: NvmlCode | None = None
    memory_v1_error: NvmlCode | None = None
    name_error: NvmlCode | None = None
    lost: bool = False
    migs: list[FakeMig | None] = field(default_factory=list)  # None: an empty slot
    mig_error: NvmlCode | None = None


@dataclass(frozen=True)
class _Handle:
    gpu: int
    mig: int | None = None


class FakeNvml:
    """NvmlBackend over FakeGpus, listed in NVML (PCI) order."""

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        init_error: NvmlCode | None = None,
        driver: str | bytes = H200_DRIVER,
        cuda: int = H200_CUDA,
        system_error: NvmlCode | None = None,
    ) -> None:
        self.gpus = [FakeGpu()] if gpus is None else gpus
        self.init_error = init_error
        self.driver = driver
        self.cuda = cuda
        self.system_error = system_error
        self.initialized = 0
        self.calls: Counter[str] = Counter()

    def _enter(self, call: str) -> None:
        self.calls[call] += 1
        if self.initialized <= 0:
            raise nvml_error(NvmlCode.UNINITIALIZED)

    def _gpu(self, call: str, device: DeviceHandle) -> tuple[FakeGpu, FakeMig | None]:
        self._enter(call)
        assert isinstance(device, _Handle), f"{device!r} is not a handle"
        gpu = self.gpus[device.gpu]
        if gpu.lost:
            raise nvml_error(NvmlCode.GPU_IS_LOST)
        if device.mig is None:
            return gpu, None
        mig = gpu.migs[device.mig]
        assert mig is not None
        return gpu, mig

    def init(self) -> None:
        self.calls["init"] += 1
        if self.init_error is not None:
            raise nvml_error(self.init_error)
        self.initialized += 1

    def shutdown(self) -> None:
        self._enter("shutdown")
        self.initialized -= 1

    def driver_version(self) -> str | bytes:
        self._enter("driver_version")
        if self.system_error is not None:
            raise nvml_error(self.system_error)
        return self.driver

    def cuda_driver_version(self) -> int:
        self._enter("cuda_driver_version")
        if self.system_error is not None:
            raise nvml_error(self.system_error)
        return self.cuda

    def device_count(self) -> int:
        self._enter("device_count")
        return len(self.gpus)

    def device_handle(self, index: int) -> DeviceHandle:
        self._enter("device_handle")
        if not 0 <= index < len(self.gpus):
            raise nvml_error(NvmlCode.INVALID_ARGUMENT)
        if self.gpus[index].lost:
            raise nvml_error(NvmlCode.GPU_IS_LOST)
        return DeviceHandle(_Handle(index))

    def uuid(self, device: DeviceHandle) -> str | bytes:
        gpu, mig = self._gpu("uuid", device)
        return gpu.uuid if mig is None else mig.uuid

    def name(self, device: DeviceHandle) -> str | bytes:
        gpu, mig = self._gpu("name", device)
        if gpu.name_error is not None:
            raise nvml_error(gpu.name_error)
        return gpu.name if mig is None else mig.name

    def memory_v2(self, device: DeviceHandle) -> MemoryInfo:
        gpu, mig = self._gpu("memory_v2", device)
        if gpu.memory_v2_error is not None:
            raise nvml_error(gpu.memory_v2_error)
        return (
            MemoryInfo(gpu.total, gpu.used_v2) if mig is None else MemoryInfo(mig.total, mig.used)
        )

    def memory_v1(self, device: DeviceHandle) -> MemoryInfo:
        gpu, mig = self._gpu("memory_v1", device)
        if gpu.memory_v1_error is not None:
            raise nvml_error(gpu.memory_v1_error)
        return (
            MemoryInfo(gpu.total, gpu.used_v1) if mig is None else MemoryInfo(mig.total, mig.used)
        )

    def utilization(self, device: DeviceHandle) -> int:
        gpu, mig = self._gpu("utilization", device)
        if gpu.utilization_error is not None or mig is not None:
            raise nvml_error(gpu.utilization_error or NvmlCode.NOT_SUPPORTED)
        return gpu.utilization

    def mig_enabled(self, device: DeviceHandle) -> bool:
        gpu, _ = self._gpu("mig_enabled", device)
        if gpu.mig_error is not None:
            raise nvml_error(gpu.mig_error)
        return bool(gpu.migs)

    def max_mig_devices(self, device: DeviceHandle) -> int:
        gpu, _ = self._gpu("max_mig_devices", device)
        return len(gpu.migs)

    def mig_device(self, device: DeviceHandle, slot: int) -> DeviceHandle:
        gpu, _ = self._gpu("mig_device", device)
        if not 0 <= slot < len(gpu.migs):
            raise nvml_error(NvmlCode.INVALID_ARGUMENT)
        if gpu.migs[slot] is None:
            raise nvml_error(NvmlCode.NOT_FOUND)
        assert isinstance(device, _Handle)
        return DeviceHandle(_Handle(device.gpu, slot))

    def mig_ids(self, mig: DeviceHandle) -> tuple[int, int]:
        _, found = self._gpu("mig_ids", mig)
        assert found is not None
        return found.gpu_instance, found.compute_instance

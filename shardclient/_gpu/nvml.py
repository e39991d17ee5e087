"""The small slice of NVML that GpuMonitor uses, as a Protocol, and its nvidia-ml-py implementation.

Everything NVML-specific crosses this boundary as plain ints, strs/bytes and :class:`NvmlError`
(carrying NVML's own return code), so that the monitor can be tested against a fake and no
untyped pynvml object leaks into shardclient's API.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NewType, Protocol

__all__ = [
    "DeviceHandle",
    "MemoryInfo",
    "NvmlBackend",
    "NvmlCode",
    "NvmlError",
    "PynvmlBackend",
]

DeviceHandle = NewType("DeviceHandle", object)
"""An opaque NVML device handle (a GPU or a MIG device), valid until NVML is shut down."""


class NvmlCode(enum.IntEnum):
    """NVML return codes (nvml.h) that shardclient treats specially; others pass through as ints."""

    UNINITIALIZED = 1
    INVALID_ARGUMENT = 2
    NOT_SUPPORTED = 3
    NO_PERMISSION = 4
    NOT_FOUND = 6
    DRIVER_NOT_LOADED = 9
    LIBRARY_NOT_FOUND = 12
    FUNCTION_NOT_FOUND = 13
    GPU_IS_LOST = 15
    ARGUMENT_VERSION_MISMATCH = 25
    UNKNOWN = 999


class NvmlError(Exception):
    """An NVML call failed: ``code`` is NVML's return code, ``reason`` its text."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason} (NVML error {self.code})"


@dataclass(frozen=True)
class MemoryInfo:
    """Device memory in bytes: ``used`` is what the query version calls used."""

    total: int
    used: int


class NvmlBackend(Protocol):
    """The NVML calls GpuMonitor makes; each raises :class:`NvmlError` on failure."""

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def driver_version(self) -> str | bytes: ...
    def cuda_driver_version(self) -> int: ...
    def device_count(self) -> int: ...
    def device_handle(self, index: int) -> DeviceHandle: ...
    def uuid(self, device: DeviceHandle) -> str | bytes: ...
    def name(self, device: DeviceHandle) -> str | bytes: ...
    def memory_v2(self, device: DeviceHandle) -> MemoryInfo:
        """nvmlDeviceGetMemoryInfo_v2: ``used`` excludes driver-reserved memory (as nvidia-smi)."""
        ...

    def memory_v1(self, device: DeviceHandle) -> MemoryInfo:
        """nvmlDeviceGetMemoryInfo: ``used`` includes driver-reserved memory."""
        ...

    def utilization(self, device: DeviceHandle) -> int:
        """GPU utilization in percent over NVML's last sample period."""
        ...

    def mig_enabled(self, device: DeviceHandle) -> bool: ...
    def max_mig_devices(self, device: DeviceHandle) -> int: ...
    def mig_device(self, device: DeviceHandle, slot: int) -> DeviceHandle: ...
    def mig_ids(self, mig: DeviceHandle) -> tuple[int, int]:
        """A MIG device's (GPU instance id, compute instance id)."""
        ...


def _raw(function: Callable[..., Any]) -> Callable[..., Any]:
    """The function under nvidia-ml-py's str-decoding wrapper: it returns bytes, never crashes."""
    inner = getattr(function, "__wrapped__", None)
    return inner if callable(inner) else function


class PynvmlBackend:
    """NvmlBackend over nvidia-ml-py (module ``pynvml``), imported on :meth:`init`.

    Strings are read beneath nvidia-ml-py's decoding wrapper, whose strict UTF-8 decode raises on
    names some drivers return; the monitor decodes them with replacement instead.
    """

    def __init__(self, module: Any = None) -> None:
        """``module``: a pynvml-like module (tests pass stand-ins); by default ``import pynvml``."""
        self._m: Any = module
        self._error: type[BaseException] = Exception

    def _load(self) -> Any:
        if self._m is None:
            try:
                import pynvml
            except ImportError as exc:
                raise NvmlError(
                    NvmlCode.LIBRARY_NOT_FOUND, f"nvidia-ml-py is not installed ({exc})"
                ) from None
            self._m = pynvml
        self._error = self._m.NVMLError
        return self._m

    def _fail(self, exc: BaseException) -> NvmlError:
        code = getattr(exc, "value", NvmlCode.UNKNOWN)
        try:
            reason = str(exc)
        except Exception:  # noqa: BLE001 - str() asks the library, which may be gone
            reason = "NVML error"
        return NvmlError(int(code) if isinstance(code, int) else NvmlCode.UNKNOWN, reason)

    def init(self) -> None:
        m = self._load()
        try:
            m.nvmlInit()
        except self._error as exc:
            raise self._fail(exc) from None
        except OSError as exc:  # a library that loads but is broken
            raise NvmlError(NvmlCode.LIBRARY_NOT_FOUND, str(exc)) from None

    def shutdown(self) -> None:
        try:
            self._m.nvmlShutdown()
        except self._error as exc:
            raise self._fail(exc) from None

    def driver_version(self) -> str | bytes:
        try:
            return _text_or_bytes(_raw(self._m.nvmlSystemGetDriverVersion)())
        except self._error as exc:
            raise self._fail(exc) from None

    def cuda_driver_version(self) -> int:
        try:
            return int(self._m.nvmlSystemGetCudaDriverVersion())
        except self._error as exc:
            raise self._fail(exc) from None

    def device_count(self) -> int:
        try:
            return int(self._m.nvmlDeviceGetCount())
        except self._error as exc:
            raise self._fail(exc) from None

    def device_handle(self, index: int) -> DeviceHandle:
        try:
            return DeviceHandle(self._m.nvmlDeviceGetHandleByIndex(index))
        except self._error as exc:
            raise self._fail(exc) from None

    def uuid(self, device: DeviceHandle) -> str | bytes:
        try:
            return _text_or_bytes(_raw(self._m.nvmlDeviceGetUUID)(device))
        except self._error as exc:
            raise self._fail(exc) from None

    def name(self, device: DeviceHandle) -> str | bytes:
        try:
            return _text_or_bytes(_raw(self._m.nvmlDeviceGetName)(device))
        except self._error as exc:
            raise self._fail(exc) from None

    def memory_v2(self, device: DeviceHandle) -> MemoryInfo:
        version = getattr(self._m, "nvmlMemory_v2", None)
        if version is None:
            raise NvmlError(NvmlCode.FUNCTION_NOT_FOUND, "this nvidia-ml-py has no v2 memory query")
        try:
            info = self._m.nvmlDeviceGetMemoryInfo(device, version=version)
        except TypeError:  # an nvidia-ml-py without the version argument
            raise NvmlError(
                NvmlCode.FUNCTION_NOT_FOUND, "this nvidia-ml-py has no v2 memory query"
            ) from None
        except self._error as exc:
            raise self._fail(exc) from None
        return MemoryInfo(int(info.total), int(info.used))

    def memory_v1(self, device: DeviceHandle) -> MemoryInfo:
        try:
            info = self._m.nvmlDeviceGetMemoryInfo(device)
        except self._error as exc:
            raise self._fail(exc) from None
        return MemoryInfo(int(info.total), int(info.used))

    def utilization(self, device: DeviceHandle) -> int:
        try:
            return int(self._m.nvmlDeviceGetUtilizationRates(device).gpu)
        except self._error as exc:
            raise self._fail(exc) from None

    def mig_enabled(self, device: DeviceHandle) -> bool:
        try:
            current, _pending = self._m.nvmlDeviceGetMigMode(device)
        except self._error as exc:
            raise self._fail(exc) from None
        return int(current) == 1  # NVML_DEVICE_MIG_ENABLE

    def max_mig_devices(self, device: DeviceHandle) -> int:
        try:
            return int(self._m.nvmlDeviceGetMaxMigDeviceCount(device))
        except self._error as exc:
            raise self._fail(exc) from None

    def mig_device(self, device: DeviceHandle, slot: int) -> DeviceHandle:
        try:
            return DeviceHandle(self._m.nvmlDeviceGetMigDeviceHandleByIndex(device, slot))
        except self._error as exc:
            raise self._fail(exc) from None

    def mig_ids(self, mig: DeviceHandle) -> tuple[int, int]:
        try:
            gi = int(self._m.nvmlDeviceGetGpuInstanceId(mig))
            ci = int(self._m.nvmlDeviceGetComputeInstanceId(mig))
        except self._error as exc:
            raise self._fail(exc) from None
        return gi, ci


def _text_or_bytes(value: object) -> str | bytes:
    """Narrow a pynvml string: bytes beneath the wrapper, str from old or stand-in modules."""
    if isinstance(value, (str, bytes)):
        return value
    return str(value)

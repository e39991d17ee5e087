"""GpuMonitor: live CUDA device readings from NVML, in the formats OpenFL's director expects."""

from __future__ import annotations

import enum
import logging
import operator
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from shardclient._checks import bounded_items
from shardclient._errors import GpuInfoError
from shardclient._gpu.libcuda import CudaOrder, LibcudaUnavailable, cuda_gpu_uuids
from shardclient._gpu.nvml import (
    DeviceHandle,
    MemoryInfo,
    NvmlBackend,
    NvmlCode,
    NvmlError,
    PynvmlBackend,
)
from shardclient._gpu.visible import (
    MigDevice,
    bare_uuid,
    parse_visible_devices,
    resolve_visible,
)
from shardclient._text import describe_value
from shardclient.messages import CudaDeviceInfo

__all__ = ["FROM_ENVIRONMENT", "FromEnvironment", "GpuMonitor", "NOT_AVAILABLE"]

_log = logging.getLogger("shardclient.gpu")

T = TypeVar("T")

NOT_AVAILABLE = "N/A"
"""Placeholder for a text field the device does not support; numeric fields become 0."""

# Codes meaning "this device or driver cannot answer this query", as opposed to a failure.
_UNSUPPORTED = frozenset(
    {NvmlCode.NOT_SUPPORTED, NvmlCode.FUNCTION_NOT_FOUND, NvmlCode.ARGUMENT_VERSION_MISMATCH}
)


class FromEnvironment(enum.Enum):
    """Sentinel type: read the variable from the process environment when the monitor is made."""

    FROM_ENVIRONMENT = "from the environment"


FROM_ENVIRONMENT = FromEnvironment.FROM_ENVIRONMENT


def _unless_unsupported(read: Callable[[], T], default: T) -> T:
    """``read()``, or ``default`` when the device or driver cannot answer that query."""
    try:
        return read()
    except NvmlError as exc:
        if exc.code not in _UNSUPPORTED:
            raise
        return default


def as_text(value: str | bytes) -> str:
    """NVML text as str: bytes decoded as UTF-8 with replacement, so odd names never crash."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def format_cuda_version(version: int) -> str:
    """NVML's CUDA driver version (1000*major + 10*minor) as 'major.minor': 12040 -> '12.4'."""
    return f"{version // 1000}.{version % 1000 // 10}"


@dataclass
class _Gpu:
    """One NVML GPU as found at resolution; ``error`` when it could not be read then."""

    nvml_index: int
    handle: DeviceHandle | None
    uuid: str | None
    error: NvmlError | None = None


@dataclass
class _Target:
    """A visible CUDA device: what to read, and what does not change between reads."""

    label: str
    handle: DeviceHandle | None
    name: str
    error: NvmlError | None = None
    memory_v2: bool = True


@dataclass(frozen=True)
class _Visible:
    targets: tuple[_Target, ...]
    note: str | None
    driver: str
    cuda: str


class GpuMonitor:
    """Reads CUDA devices' memory, utilization and identity through NVML, initialized once.

    CUDA index i is the i-th device CUDA_VISIBLE_DEVICES makes visible, exactly as CUDA numbers
    them (see :mod:`shardclient._gpu.visible` for the parsing rules): NVML itself ignores the
    variable and counts in PCI bus order. Integer entries and unset values count in CUDA's
    enumeration order (fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID), learnt from libcuda
    where present, else assumed to be PCI order (logged once). The mapping is worked out on the
    first request that needs it and kept.

    Used memory is NVML's v2 reading, the one nvidia-smi shows (v1 also counts driver-reserved
    memory); v1 only where v2 is unsupported. A field the device does not support reads
    ``'N/A'`` (text) or 0 (numbers). Without NVML (no driver or library), :attr:`available` is
    False and asking for any device raises GpuInfoError with NVML's reason.

    Close it (or use it as a context manager) to shut NVML down; closing twice is harmless.
    """

    def __init__(
        self,
        *,
        visible_devices: str | FromEnvironment | None = FROM_ENVIRONMENT,
        device_order: str | FromEnvironment | None = FROM_ENVIRONMENT,
        backend: NvmlBackend | None = None,
        cuda_order: CudaOrder | None = None,
    ) -> None:
        """Initialize NVML; never raises for a missing driver or library (see ``available``).

        ``visible_devices``/``device_order`` override CUDA_VISIBLE_DEVICES/CUDA_DEVICE_ORDER
        (None: unset); by default they are read from the environment now. ``backend`` and
        ``cuda_order`` replace NVML and the libcuda query (tests, other bindings).
        """
        self._visible_value = (
            os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible_devices is FROM_ENVIRONMENT
            else visible_devices
        )
        self._order_value = (
            os.environ.get("CUDA_DEVICE_ORDER")
            if device_order is FROM_ENVIRONMENT
            else device_order
        )
        self._backend: NvmlBackend = backend if backend is not None else PynvmlBackend()
        self._cuda_order: CudaOrder = cuda_order if cuda_order is not None else cuda_gpu_uuids
        self._lock = threading.Lock()
        self._visible: _Visible | None = None
        self._mig_handles: dict[tuple[int, int], DeviceHandle] = {}
        self._closed = False
        self._reason: str | None = None
        try:
            self._backend.init()
        except NvmlError as exc:
            self._reason = str(exc)
            _log.info("NVML is unavailable, no GPU readings: %s", exc)

    @property
    def available(self) -> bool:
        """Whether NVML initialized: False without an NVIDIA driver or NVML library."""
        return self._reason is None

    @property
    def unavailable_reason(self) -> str | None:
        """NVML's reason for not initializing, or None when it did."""
        return self._reason

    @property
    def visible_devices(self) -> str | None:
        """The CUDA_VISIBLE_DEVICES value in use (None: unset, all devices)."""
        return self._visible_value

    def __enter__(self) -> GpuMonitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Shut NVML down (once); later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._visible = None
            if self._reason is None:
                try:
                    self._backend.shutdown()
                except NvmlError as exc:
                    _log.warning("NVML shutdown failed: %s", exc)

    def devices(self, indices: Sequence[int] | None = None) -> list[CudaDeviceInfo]:
        """Current readings of the CUDA devices ``indices`` (None: every visible one), in order.

        Raises GpuInfoError naming the index for an index that is not visible (with the reason
        the CUDA_VISIBLE_DEVICES entry was dropped, if one was), a lost GPU, an NVML failure,
        or any index when NVML is unavailable. ``devices([])`` is always [].
        """
        if self._closed:
            raise GpuInfoError("the GPU monitor is closed")
        if indices is not None:
            indices = _checked_indices(indices)
            if not indices:
                return []
        if self._reason is not None:
            if indices is None:
                return []
            raise GpuInfoError(f"CUDA device {indices[0]}: NVML is unavailable: {self._reason}")
        visible = self._visible or self._resolve()
        targets = visible.targets
        if indices is None:
            indices = range(len(targets))
        out = []
        for index in indices:
            if not 0 <= index < len(targets):
                raise GpuInfoError(self._not_visible(index, visible))
            out.append(self._read(index, targets[index], visible))
        return out

    def _not_visible(self, index: int, visible: _Visible) -> str:
        count = len(visible.targets)
        setting = "unset" if self._visible_value is None else f"{self._visible_value!r}"
        message = (
            f"CUDA device {index} is not visible: {count} CUDA device"
            f"{'' if count == 1 else 's'} visible (CUDA_VISIBLE_DEVICES {setting})"
        )
        return f"{message}; {visible.note}" if visible.note else message

    def _read(self, index: int, target: _Target, visible: _Visible) -> CudaDeviceInfo:
        handle = target.handle
        if handle is None:
            assert target.error is not None
            raise self._device_error(index, target, "cannot be read", target.error)
        backend = self._backend
        try:
            memory = self._memory(target, handle)
            utilization = _unless_unsupported(
                lambda: f"{backend.utilization(handle)}%", NOT_AVAILABLE
            )
        except NvmlError as exc:
            raise self._device_error(index, target, "cannot be read", exc) from None
        return CudaDeviceInfo(
            index=index,
            memory_total=memory.total,
            memory_utilized=memory.used,
            device_utilization=utilization,
            cuda_driver_version=visible.driver,
            cuda_version=visible.cuda,
            name=target.name,
        )

    def _memory(self, target: _Target, handle: DeviceHandle) -> MemoryInfo:
        if target.memory_v2:
            try:
                return self._backend.memory_v2(handle)
            except NvmlError as exc:
                if exc.code not in _UNSUPPORTED:
                    raise
                target.memory_v2 = False  # unsupported stays unsupported: ask v1 from now on
        return _unless_unsupported(lambda: self._backend.memory_v1(handle), MemoryInfo(0, 0))

    @staticmethod
    def _device_error(index: int, target: _Target, what: str, exc: NvmlError) -> GpuInfoError:
        if exc.code == NvmlCode.GPU_IS_LOST:
            return GpuInfoError(f"CUDA device {index} ({target.label}) is lost: {exc}")
        return GpuInfoError(f"CUDA device {index} ({target.label}) {what}: {exc}")

    # Resolution: done once, on the first request that needs it.

    def _resolve(self) -> _Visible:
        with self._lock:
            if self._closed:
                raise GpuInfoError("the GPU monitor is closed")
            if self._visible is None:
                self._visible = self._build_visible()
            return self._visible

    def _build_visible(self) -> _Visible:
        backend = self._backend
        try:
            driver = _unless_unsupported(lambda: as_text(backend.driver_version()), NOT_AVAILABLE)
            cuda = _unless_unsupported(
                lambda: format_cuda_version(backend.cuda_driver_version()), NOT_AVAILABLE
            )
            count = backend.device_count()
        except NvmlError as exc:
            raise GpuInfoError(f"NVML cannot list the GPUs: {exc}") from None
        gpus = [self._gpu(i) for i in range(count)]
        spec = parse_visible_devices(self._visible_value)
        ordered = self._cuda_ordered(gpus) if spec.has_ordinals else gpus
        migs = self._migs(ordered) if spec.needs_mig else []
        resolution = resolve_visible(spec, [g.uuid for g in ordered], migs)
        targets = tuple(self._target(ref.gpu, ref.mig, ordered, migs) for ref in resolution.refs)
        if resolution.note:
            _log.warning(
                "CUDA_VISIBLE_DEVICES=%r: %s; %d CUDA device(s) visible",
                self._visible_value,
                resolution.note,
                len(targets),
            )
        return _Visible(targets, resolution.note, driver, cuda)

    def _gpu(self, nvml_index: int) -> _Gpu:
        try:
            handle = self._backend.device_handle(nvml_index)
        except NvmlError as exc:
            return _Gpu(nvml_index, None, None, exc)
        try:
            return _Gpu(nvml_index, handle, as_text(self._backend.uuid(handle)))
        except NvmlError as exc:
            return _Gpu(nvml_index, handle, None, exc)

    def _cuda_ordered(self, gpus: list[_Gpu]) -> list[_Gpu]:
        """The GPUs in CUDA's enumeration order: NVML's (PCI) order unless libcuda says other."""
        if len(gpus) < 2 or self._order_value == "PCI_BUS_ID":
            return gpus
        try:
            order = list(self._cuda_order(self._order_value))
        except LibcudaUnavailable as exc:
            self._assume_pci_order(str(exc))
            return gpus
        by_uuid = {bare_uuid(g.uuid): g for g in gpus if g.uuid is not None}
        ordered = [by_uuid[u] for u in order if u in by_uuid]
        if len(ordered) != len(order) or len(ordered) != len(gpus):
            self._assume_pci_order(
                f"libcuda lists {len(order)} GPU(s) that do not match NVML's {len(gpus)}"
            )
            return gpus
        return ordered

    @staticmethod
    def _assume_pci_order(reason: str) -> None:
        _log.warning(
            "CUDA's device order is unknown (%s): taking CUDA indices and integer"
            " CUDA_VISIBLE_DEVICES entries in PCI bus order, as with CUDA_DEVICE_ORDER=PCI_BUS_ID",
            reason,
        )

    def _migs(self, gpus: list[_Gpu]) -> list[MigDevice]:
        migs: list[MigDevice] = []
        self._mig_handles.clear()
        for position, gpu in enumerate(gpus):
            if gpu.handle is None:
                continue
            try:
                if not self._backend.mig_enabled(gpu.handle):
                    continue
                slots = self._backend.max_mig_devices(gpu.handle)
            except NvmlError:
                continue  # no MIG support (or mode unreadable): no MIG devices on this GPU
            for slot in range(slots):
                try:
                    handle = self._backend.mig_device(gpu.handle, slot)
                except NvmlError:
                    continue  # an empty slot (NOT_FOUND)
                try:
                    uuid: str | None = as_text(self._backend.uuid(handle))
                except NvmlError:
                    uuid = None
                try:
                    gi, ci = self._backend.mig_ids(handle)
                except NvmlError:
                    gi, ci = -1, -1
                self._mig_handles[(position, slot)] = handle
                migs.append(MigDevice(position, slot, uuid, gi, ci))
        return migs

    def _target(
        self, gpu_pos: int, mig_pos: int | None, gpus: list[_Gpu], migs: list[MigDevice]
    ) -> _Target:
        gpu = gpus[gpu_pos]
        if mig_pos is None:
            label = gpu.uuid or f"NVML device {gpu.nvml_index}"
            handle = gpu.handle if gpu.error is None else None
            error = gpu.error
        else:
            mig = migs[mig_pos]
            label = mig.uuid or f"MIG {mig.gpu_instance}/{mig.compute_instance} of {gpu.uuid}"
            handle = self._mig_handles[(mig.gpu, mig.slot)]
            error = None
        if handle is None:
            return _Target(label, None, NOT_AVAILABLE, error)
        try:
            name = _unless_unsupported(lambda: as_text(self._backend.name(handle)), NOT_AVAILABLE)
        except NvmlError as exc:
            return _Target(label, None, NOT_AVAILABLE, exc)
        return _Target(label, handle, name)


def _checked_indices(indices: object) -> list[int]:
    """``indices`` (any iterable of ints: a list, a tuple, a numpy array) as a list of ints;
    TypeError naming the argument or the entry otherwise."""
    items = bounded_items(
        indices,
        where="indices",
        what="CUDA indices",
        limit=_MAX_INDICES,
        error=lambda message, _: TypeError(message),
    )
    checked = []
    for position, index in enumerate(items):
        try:
            if isinstance(index, bool):
                raise TypeError
            checked.append(operator.index(index))  # type: ignore[arg-type]  # ints, numpy ints
        except Exception:  # noqa: BLE001 - not an int, or an __index__ that raises
            raise TypeError(
                f"indices[{position}] must be an int, got {describe_value(index)}"
            ) from None
    return checked


_MAX_INDICES = 1024

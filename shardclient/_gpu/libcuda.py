"""CUDA's enumeration order of the GPUs, read from the CUDA driver library (libcuda) with ctypes.

NVML numbers GPUs in PCI bus order; CUDA, unless CUDA_DEVICE_ORDER=PCI_BUS_ID, numbers them
fastest first. To map integer CUDA_VISIBLE_DEVICES entries and CUDA indices to NVML devices, we ask
libcuda for every GPU's UUID in its own order.

The query runs in a short-lived child process (this file run as a script, standard library only):
cuInit in the envoy's own process would fix the process's CUDA_VISIBLE_DEVICES for good and make
CUDA unusable in processes it forks later. The child sees no CUDA_VISIBLE_DEVICES, so it lists all
GPUs, and the monitor's CUDA_DEVICE_ORDER.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = [
    "CudaDriver",
    "CudaOrder",
    "LibcudaUnavailable",
    "cuda_gpu_uuids",
    "format_uuid",
    "read_gpu_uuids",
]

CUDA_SUCCESS = 0
CUDA_ERROR_NO_DEVICE = 100
CUDA_ERROR_INVALID_DEVICE = 101  # cuInit's answer to a CUDA_VISIBLE_DEVICES it rejects ("0,0")


class LibcudaUnavailable(Exception):
    """libcuda could not report CUDA's device order; the message says why."""


CudaOrder = Callable[[str | None], Sequence[str]]
"""Given CUDA_DEVICE_ORDER (None: unset), every GPU's bare UUID in CUDA's order; raises
LibcudaUnavailable where that cannot be known."""


class CudaDriver(Protocol):
    """The four driver API calls needed, returning (CUresult, value)."""

    def init(self) -> int: ...
    def device_count(self) -> tuple[int, int]: ...
    def device(self, ordinal: int) -> tuple[int, int]: ...
    def uuid(self, device: int) -> tuple[int, bytes]: ...


class _CtypesDriver:
    """CudaDriver over libcuda.so.1 (nvcuda.dll on Windows) through ctypes."""

    def __init__(self) -> None:
        name = "nvcuda.dll" if sys.platform.startswith("win") else "libcuda.so.1"
        try:
            self._lib = ctypes.CDLL(name)
        except OSError as exc:
            raise LibcudaUnavailable(f"{name} cannot be loaded ({exc})") from None
        # cuDeviceGetUuid (v1) names the physical GPU, which is what an order of GPUs needs.
        try:
            self._uuid = self._lib.cuDeviceGetUuid
        except AttributeError:
            raise LibcudaUnavailable(f"{name} has no cuDeviceGetUuid (CUDA < 9.2)") from None

    def init(self) -> int:
        return int(self._lib.cuInit(ctypes.c_uint(0)))

    def device_count(self) -> tuple[int, int]:
        count = ctypes.c_int(0)
        result = int(self._lib.cuDeviceGetCount(ctypes.byref(count)))
        return result, count.value

    def device(self, ordinal: int) -> tuple[int, int]:
        device = ctypes.c_int(0)
        result = int(self._lib.cuDeviceGet(ctypes.byref(device), ctypes.c_int(ordinal)))
        return result, device.value

    def uuid(self, device: int) -> tuple[int, bytes]:
        buffer = (ctypes.c_ubyte * 16)()
        result = int(self._uuid(ctypes.byref(buffer), ctypes.c_int(device)))
        return result, bytes(buffer)


def format_uuid(raw: bytes) -> str:
    """16 UUID bytes in NVML's text form without the type prefix: 8-4-4-4-12 lower-case hex."""
    h = raw.hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def read_gpu_uuids(driver: CudaDriver | None = None) -> list[str]:
    """Every device's UUID in this process's CUDA order ([] if none); raises LibcudaUnavailable."""
    drv = driver if driver is not None else _CtypesDriver()
    result = drv.init()
    if result in (CUDA_ERROR_NO_DEVICE, CUDA_ERROR_INVALID_DEVICE):
        return []
    if result != CUDA_SUCCESS:
        raise LibcudaUnavailable(f"cuInit failed with CUresult {result}")
    result, count = drv.device_count()
    if result != CUDA_SUCCESS:
        raise LibcudaUnavailable(f"cuDeviceGetCount failed with CUresult {result}")
    uuids = []
    for ordinal in range(count):
        result, device = drv.device(ordinal)
        if result != CUDA_SUCCESS:
            raise LibcudaUnavailable(f"cuDeviceGet({ordinal}) failed with CUresult {result}")
        result, raw = drv.uuid(device)
        if result != CUDA_SUCCESS:
            raise LibcudaUnavailable(f"cuDeviceGetUuid({ordinal}) failed with CUresult {result}")
        uuids.append(format_uuid(raw))
    return uuids


def cuda_gpu_uuids(
    device_order: str | None,
    *,
    visible_devices: str | None = None,
    command: Sequence[str] | None = None,
    timeout: float = 60.0,
) -> list[str]:
    """Every GPU's bare UUID in CUDA's order under ``device_order``, read in a child process.

    ``visible_devices`` sets the child's CUDA_VISIBLE_DEVICES (default: unset, every GPU), which
    makes the answer CUDA's own reading of that value (the GPU tests compare ours with it).
    ``command`` replaces the child's command line (tests). Raises LibcudaUnavailable, never
    anything else.
    """
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.pop("CUDA_DEVICE_ORDER", None)
    if device_order is not None:
        env["CUDA_DEVICE_ORDER"] = device_order
    if visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible_devices
    argv = list(command) if command is not None else [sys.executable, "-I", "-S", __file__]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise LibcudaUnavailable(f"the libcuda query could not run ({exc})") from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LibcudaUnavailable(
            f"the libcuda query exited with status {done.returncode}: {detail}"
        ) from None
    if isinstance(answer, dict):
        uuids = answer.get("uuids")
        if isinstance(uuids, list) and all(isinstance(u, str) for u in uuids):
            return [str(u) for u in uuids]
        error = answer.get("error")
        if isinstance(error, str):
            raise LibcudaUnavailable(error)
    raise LibcudaUnavailable(f"the libcuda query answered {done.stdout.strip()[:200]!r}")


def _main() -> int:
    """The child: print {"uuids": [...]} or {"error": "..."} as one line of JSON."""
    try:
        answer: dict[str, object] = {"uuids": read_gpu_uuids()}
    except LibcudaUnavailable as exc:
        answer = {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - ctypes faults short of a crash: report, never hang the parent
        answer = {"error": f"libcuda query failed: {exc!r}"}
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(_main())

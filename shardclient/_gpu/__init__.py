"""Live CUDA device readings for health checks: NVML through GpuMonitor.

- :mod:`~shardclient._gpu.visible`: CUDA_VISIBLE_DEVICES parsing and resolution (pure functions).
- :mod:`~shardclient._gpu.nvml`: the NVML calls used, as a Protocol, over nvidia-ml-py.
- :mod:`~shardclient._gpu.libcuda`: CUDA's own device order, from libcuda in a child process.
- :mod:`~shardclient._gpu.monitor`: GpuMonitor, which puts them together.
"""

from shardclient._gpu.monitor import FROM_ENVIRONMENT, NOT_AVAILABLE, FromEnvironment, GpuMonitor
from shardclient._gpu.nvml import DeviceHandle, MemoryInfo, NvmlBackend, NvmlCode, NvmlError

__all__ = [
    "FROM_ENVIRONMENT",
    "NOT_AVAILABLE",
    "DeviceHandle",
    "FromEnvironment",
    "GpuMonitor",
    "MemoryInfo",
    "NvmlBackend",
    "NvmlCode",
    "NvmlError",
]

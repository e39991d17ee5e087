"""Live CUDA device readings for health checks: NVML through GpuMonitor.

- :mod:`~shardclient.gpu.visible`: CUDA_VISIBLE_DEVICES parsing and resolution (pure functions).
- :mod:`~shardclient.gpu.nvml`: the NVML calls used, as a Protocol, over nvidia-ml-py.
- :mod:`~shardclient.gpu.libcuda`: CUDA's own device order, from libcuda in a child process.
- :mod:`~shardclient.gpu.monitor`: GpuMonitor, which puts them together.
"""

from shardclient.gpu.monitor import FROM_ENVIRONMENT, NOT_AVAILABLE, FromEnvironment, GpuMonitor
from shardclient.gpu.nvml import DeviceHandle, MemoryInfo, NvmlBackend, NvmlCode, NvmlError

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

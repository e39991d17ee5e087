"""shardclient: a typed client for OpenFL's director, as an envoy uses it."""

from shardclient._aio import AsyncShardDirectorClient, CudaDevicesInfo
from shardclient._client import ShardDirectorClient
from shardclient._config import EnvoyConfig, load_envoy_config
from shardclient._descriptor import (
    ShardDescriptor,
    StaticShardDescriptor,
    descriptor_from_shard_info,
    shard_info_from_descriptor,
)
from shardclient._download import DownloadedExperiment, ProgressCallback, archive_filename
from shardclient._errors import (
    ClientClosedError,
    CorruptExperimentDataError,
    DirectorProtocolError,
    DirectorRPCError,
    DirectorTimeoutError,
    DirectorUnavailableError,
    EnvoyConfigError,
    GpuInfoError,
    ShardClientError,
    ShardDescriptorError,
    ShardNotFoundError,
    ShardRefusedError,
    TLSConfigurationError,
    TLSHandshakeError,
)
from shardclient._gpu import GpuMonitor
from shardclient._retry import RetryPolicy
from shardclient.messages import CudaDeviceInfo, ExperimentData, ShardInfo

__all__ = [
    "AsyncShardDirectorClient",
    "ShardDirectorClient",
    "RetryPolicy",
    "GpuMonitor",
    "DownloadedExperiment",
    "ProgressCallback",
    "CudaDevicesInfo",
    "archive_filename",
    "ShardDescriptor",
    "StaticShardDescriptor",
    "shard_info_from_descriptor",
    "descriptor_from_shard_info",
    "EnvoyConfig",
    "load_envoy_config",
    "CudaDeviceInfo",
    "ExperimentData",
    "ShardInfo",
    "ClientClosedError",
    "CorruptExperimentDataError",
    "DirectorProtocolError",
    "DirectorRPCError",
    "DirectorTimeoutError",
    "DirectorUnavailableError",
    "EnvoyConfigError",
    "GpuInfoError",
    "ShardClientError",
    "ShardDescriptorError",
    "ShardNotFoundError",
    "ShardRefusedError",
    "TLSConfigurationError",
    "TLSHandshakeError",
]

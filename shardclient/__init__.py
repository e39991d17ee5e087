"""shardclient: a typed client for OpenFL's director, as an envoy uses it."""

from shardclient.aio import AsyncShardDirectorClient, CudaDevicesInfo
from shardclient.client import ShardDirectorClient
from shardclient.config import EnvoyConfig, load_envoy_config
from shardclient.descriptor import (
    ShardDescriptor,
    StaticShardDescriptor,
    descriptor_from_shard_info,
    shard_info_from_descriptor,
)
from shardclient.download import DownloadedExperiment, ProgressCallback, archive_filename
from shardclient.errors import (
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
from shardclient.gpu import GpuMonitor
from shardclient.messages import CudaDeviceInfo, ExperimentData, ShardInfo
from shardclient.retry import RetryPolicy

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

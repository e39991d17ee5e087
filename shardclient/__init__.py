"""shardclient: a typed client for OpenFL's director, as an envoy uses it."""

from shardclient.aio import AsyncShardDirectorClient
from shardclient.client import ShardDirectorClient
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
    TLSConfigurationError,
    TLSHandshakeError,
)
from shardclient.messages import CudaDeviceInfo, ExperimentData, ShardInfo
from shardclient.retry import RetryPolicy

__all__ = [
    "AsyncShardDirectorClient",
    "ShardDirectorClient",
    "RetryPolicy",
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
    "TLSConfigurationError",
    "TLSHandshakeError",
]

"""shardclient: a typed client for OpenFL's director, as an envoy uses it."""

from shardclient.errors import (
    CorruptExperimentDataError,
    DirectorRPCError,
    DirectorTimeoutError,
    DirectorUnavailableError,
    EnvoyConfigError,
    GpuInfoError,
    ShardClientError,
    ShardDescriptorError,
    ShardNotFoundError,
    TLSConfigurationError,
)

__all__ = [
    "CorruptExperimentDataError",
    "DirectorRPCError",
    "DirectorTimeoutError",
    "DirectorUnavailableError",
    "EnvoyConfigError",
    "GpuInfoError",
    "ShardClientError",
    "ShardDescriptorError",
    "ShardNotFoundError",
    "TLSConfigurationError",
]

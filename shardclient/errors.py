"""The exceptions shardclient raises: one flat family under ShardClientError.

Every failure a caller can act on has its own class; everything else the director
answers is a DirectorRPCError carrying the gRPC status and details.
"""

from __future__ import annotations

from grpclib.const import Status

__all__ = [
    "ShardClientError",
    "ShardNotFoundError",
    "DirectorUnavailableError",
    "DirectorTimeoutError",
    "DirectorRPCError",
    "TLSConfigurationError",
    "ShardDescriptorError",
    "EnvoyConfigError",
    "GpuInfoError",
    "CorruptExperimentDataError",
]


class ShardClientError(Exception):
    """Base class of every error shardclient raises on purpose."""


class ShardNotFoundError(ShardClientError):
    """The director does not know this shard (NOT_FOUND on a health check): re-register."""

    def __init__(self, message: str, *, shard_name: str, details: str = "") -> None:
        super().__init__(message)
        self.shard_name = shard_name
        self.details = details


class DirectorUnavailableError(ShardClientError):
    """The director cannot be reached, or the connection to it was lost."""

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class DirectorTimeoutError(DirectorUnavailableError):
    """A call's deadline passed before the director answered."""


class DirectorRPCError(ShardClientError):
    """The director answered a call with a gRPC error status."""

    def __init__(self, message: str, *, status: Status, details: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.details = details


class TLSConfigurationError(ShardClientError):
    """TLS was asked for but cannot be set up: a missing, unreadable or invalid file."""


class ShardDescriptorError(ShardClientError, ValueError):
    """A shard descriptor holds a value that cannot go on the wire."""


class EnvoyConfigError(ShardClientError):
    """An envoy config file is missing, malformed, or names something unusable."""


class GpuInfoError(ShardClientError):
    """A requested CUDA device cannot be resolved or read through NVML."""


class CorruptExperimentDataError(ShardClientError):
    """An experiment archive chunk does not match its declared size."""

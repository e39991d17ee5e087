"""shardclient: typed clients for OpenFL's directors, as an envoy uses them, and an envoy.

Two director generations: OpenFL 1.5-1.7's (interactive API; ShardDirectorClient,
AsyncShardDirectorClient) and OpenFL 1.9's Workflow API (EnvoyDirectorClient,
AsyncEnvoyDirectorClient).

The package, top to bottom (internal folders and modules start with an underscore):

- ``_cli/``: the ``shardclient`` command (run, demo, one-shot calls; terminal and exit codes).
- ``_envoy/``: the application behind ``shardclient run``: the envoy loop, each experiment's
  pipeline (fetch, unpack, review, environment, run), the state file, the collaborator child.
- This module: the public API, re-exported from the layers below; ``messages`` (the protocol's
  messages) and ``testing`` (LocalDirector, an in-process director for tests).
- ``_client/``: the director clients: one RPC module and one sync facade per director
  generation over a shared transport (connection, retries, TLS, downloads, error mapping);
  ``_client/http2/`` is the only code touching grpclib/h2/hyperframe internals.
- Beside them: ``_config/`` (envoy config files), ``_descriptor`` (shard descriptors),
  ``_gpu/`` (NVML readings), ``_errors`` (the exception classes), and the small shared
  helpers ``_text``, ``_checks``, ``_log`` and ``_fs``.

Importing shardclient imports neither ``_envoy``, ``_cli`` nor openfl.
"""

from shardclient._client.download import DownloadedExperiment, ProgressCallback
from shardclient._client.interactive_aio import AsyncShardDirectorClient, CudaDevicesInfo
from shardclient._client.interactive_sync import ShardDirectorClient
from shardclient._client.retry import RetryPolicy
from shardclient._client.workflow_aio import AsyncEnvoyDirectorClient
from shardclient._client.workflow_sync import EnvoyDirectorClient
from shardclient._config.interactive import EnvoyConfig, load_envoy_config
from shardclient._descriptor import (
    ShardDescriptor,
    StaticShardDescriptor,
    descriptor_from_shard_info,
    shard_info_from_descriptor,
)
from shardclient._errors import (
    ClientClosedError,
    CorruptExperimentDataError,
    DirectorProtocolError,
    DirectorRPCError,
    DirectorTimeoutError,
    DirectorUnavailableError,
    EnvoyConfigError,
    EnvoyNotFoundError,
    GpuInfoError,
    InvalidArgumentError,
    ShardClientError,
    ShardDescriptorError,
    ShardNotFoundError,
    ShardRefusedError,
    TLSConfigurationError,
    TLSHandshakeError,
)
from shardclient._gpu import GpuMonitor
from shardclient._text import archive_filename
from shardclient.messages import CudaDeviceInfo, ExperimentData, ShardInfo

__all__ = [
    "AsyncShardDirectorClient",
    "ShardDirectorClient",
    "AsyncEnvoyDirectorClient",
    "EnvoyDirectorClient",
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
    "EnvoyNotFoundError",
    "GpuInfoError",
    "InvalidArgumentError",
    "ShardClientError",
    "ShardDescriptorError",
    "ShardNotFoundError",
    "ShardRefusedError",
    "TLSConfigurationError",
    "TLSHandshakeError",
]

"""The envoy's view of a director, whichever its generation: what the envoy loop calls.

``InteractiveDirector`` speaks OpenFL 1.5-1.7's protocol through AsyncShardDirectorClient: a
shard descriptor at registration, GPU readings in health checks, failure reports.
``WorkflowDirector`` speaks OpenFL 1.9's through AsyncEnvoyDirectorClient: a bare
connection, plain health checks, and no failure report (the protocol has none).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import anyio.to_thread

from shardclient import (
    AsyncEnvoyDirectorClient,
    AsyncShardDirectorClient,
    CudaDeviceInfo,
    DownloadedExperiment,
    EnvoyConfigError,
    EnvoyNotFoundError,
    GpuInfoError,
    GpuMonitor,
    ProgressCallback,
    ShardClientError,
    ShardDescriptor,
    ShardNotFoundError,
    ShardRefusedError,
    StaticShardDescriptor,
)
from shardclient._generation import Generation
from shardclient._log import OnceLog

__all__ = ["Director", "Generation", "InteractiveDirector", "WorkflowDirector"]

logger = logging.getLogger("shardclient.envoy")


class Director(Protocol):
    """What the envoy loop needs of a director."""

    generation: Generation
    name: str
    """This envoy's name at the director (the shard or envoy name)."""
    lost: tuple[type[ShardClientError], ...]
    """What a health check raises when the director forgot this envoy: register again."""

    @property
    def address(self) -> str: ...

    async def register(self) -> None:
        """Register (ShardRefusedError when the director refuses)."""

    async def health_check(self, *, running: bool) -> int:
        """One health check; the seconds until the next."""

    async def wait_experiment(self) -> str: ...

    async def download_experiment(
        self,
        experiment_name: str,
        dest_dir: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
    ) -> DownloadedExperiment: ...

    async def report_failure(self, name: str, code: int, description: str) -> bool:
        """Tell the director the experiment failed here; False when the protocol cannot."""

    async def close(self) -> None:
        """Close the connection (on the loop it ran on)."""


K = TypeVar("K", AsyncShardDirectorClient, AsyncEnvoyDirectorClient)


class _ClientDirector(Generic[K]):
    """What both adapters do alike: the address, waiting, downloading and closing, straight
    through to the generation's client."""

    client: K

    @property
    def address(self) -> str:
        return self.client.address

    async def wait_experiment(self) -> str:
        return await self.client.wait_experiment()

    async def download_experiment(
        self,
        experiment_name: str,
        dest_dir: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
    ) -> DownloadedExperiment:
        return await self.client.download_experiment(experiment_name, dest_dir, progress=progress)

    async def close(self) -> None:
        await self.client.close()


class InteractiveDirector(_ClientDirector[AsyncShardDirectorClient]):
    """OpenFL 1.5-1.7's director: a shard with a descriptor and CUDA devices."""

    generation = Generation.INTERACTIVE
    lost: tuple[type[ShardClientError], ...] = (ShardNotFoundError,)

    def __init__(
        self,
        client: AsyncShardDirectorClient,
        *,
        descriptor: ShardDescriptor | None,
        cuda_devices: Sequence[int] = (),
        monitor: GpuMonitor | None = None,
    ) -> None:
        self.client = client
        self.name = client.shard_name
        self.descriptor = descriptor
        self.cuda_devices = tuple(cuda_devices)
        self.monitor = monitor
        self._gpu_log = OnceLog(logger, "GPU readings")

    async def register(self) -> None:
        if self.descriptor is None:
            raise EnvoyConfigError(
                f"registering shard {self.name!r} needs its envoy config (a shard descriptor)"
            )
        accepted = await self.client.report_shard_info(self.descriptor, self.cuda_devices)
        if not accepted:
            sent = StaticShardDescriptor.from_descriptor(self.descriptor)
            sample = [str(d) for d in sent.sample_shape]
            target = [str(d) for d in sent.target_shape]
            raise ShardRefusedError(
                f"the director at {self.address} refused shard {self.name!r}: sample_shape "
                f"{sample} and target_shape {target} do not match its configuration",
                sample_shape=sample,
                target_shape=target,
            )

    def readings(self) -> list[CudaDeviceInfo]:
        """Live readings of the configured devices; [] (logged once) when they cannot be read."""
        if self.monitor is None or not self.cuda_devices:
            return []
        try:
            devices = self.monitor.devices(list(self.cuda_devices))
        except GpuInfoError as exc:
            self._gpu_log.problem(type(exc).__name__ + str(exc)[:40], str(exc))
            return []
        self._gpu_log.recovered()
        return devices

    async def health_check(self, *, running: bool) -> int:
        readings: list[CudaDeviceInfo] = []
        if self.monitor is not None and self.cuda_devices:
            # NVML calls (and a first CUDA-order lookup) block: keep them off the loop
            readings = await anyio.to_thread.run_sync(self.readings)
        return await self.client.send_health_check(
            envoy_name=self.name, is_experiment_running=running, cuda_devices_info=readings
        )

    async def report_failure(self, name: str, code: int, description: str) -> bool:
        await self.client.set_experiment_failed(
            name, error_code=code, error_description=description
        )
        return True


class WorkflowDirector(_ClientDirector[AsyncEnvoyDirectorClient]):
    """OpenFL 1.9's Workflow-API director: an envoy known by name alone."""

    generation = Generation.WORKFLOW
    lost: tuple[type[ShardClientError], ...] = (EnvoyNotFoundError,)

    def __init__(self, client: AsyncEnvoyDirectorClient, *, envoy_name: str) -> None:
        self.client = client
        self.name = envoy_name

    async def register(self) -> None:
        # openfl 1.9's director accepts every envoy; a refusal would be a new director's
        if not await self.client.connect_envoy(self.name):
            raise ShardRefusedError(
                f"the director at {self.address} refused envoy {self.name!r}",
                sample_shape=[],
                target_shape=[],
            )

    async def health_check(self, *, running: bool) -> int:
        return await self.client.send_health_check(
            envoy_name=self.name, is_experiment_running=running
        )

    async def report_failure(self, name: str, code: int, description: str) -> bool:
        return False  # OpenFL 1.9's protocol has no failure report

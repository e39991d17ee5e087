"""AsyncShardDirectorClient: the envoy RPCs of OpenFL 1.5-1.7's director (interactive API).

Package ``openfl.director``: UpdateShardInfo, UpdateEnvoyStatus (with GPU readings),
WaitExperiment, GetExperimentData and SetExperimentFailed. The connection, deadlines, retries
and error mapping are the shared DirectorConnection's; this module holds the messages.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import timedelta
from typing import SupportsIndex

from grpclib.client import Channel

from shardclient._checks import bounded_items, check_text
from shardclient._client.chunks import ChunkType
from shardclient._client.download import DownloadedExperiment, ProgressCallback
from shardclient._client.options import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
)
from shardclient._client.retry import RetryPolicy
from shardclient._client.tls import PathLike
from shardclient._client.transport import AsyncDirectorClient
from shardclient._client.wire import check_outgoing
from shardclient._descriptor import ShardDescriptor, shard_info_from_descriptor
from shardclient._errors import InvalidArgumentError, ShardClientError, ShardNotFoundError
from shardclient._generation import Generation
from shardclient._text import describe_value
from shardclient.messages import (
    CudaDeviceInfo,
    DirectorStub,
    ExperimentData,
    GetExperimentDataRequest,
    SetExperimentFailedRequest,
    UpdateEnvoyStatusRequest,
    UpdateShardInfoRequest,
    WaitExperimentRequest,
)

__all__ = ["AsyncShardDirectorClient", "CudaDevicesInfo", "cuda_device_messages"]

logger = logging.getLogger("shardclient.client")

CudaDevicesInfo = Iterable[CudaDeviceInfo | Mapping[str, object]]
"""Health-check GPU readings: CudaDeviceInfo messages, or OpenFL's dicts of the same fields."""

_GET_EXPERIMENT_DATA = "/openfl.director.Director/GetExperimentData"
_CHUNK = ChunkType(ExperimentData, "npbytes")
_CUDA_FIELDS = (
    "index", "memory_total", "memory_utilized", "device_utilization",
    "cuda_driver_version", "cuda_version", "name",
)  # fmt: skip
_MAX_CUDA_DEVICES = 1024  # an endless iterable of readings is refused, not held


def cuda_device_messages(items: CudaDevicesInfo | None) -> list[CudaDeviceInfo]:
    """Convert health-check GPU readings to messages, naming the entry and key at fault."""
    if items is None:
        return []
    readings = bounded_items(
        items,
        where="cuda_devices_info",
        what="CUDA device readings",
        limit=_MAX_CUDA_DEVICES,
        error=lambda message, where: InvalidArgumentError(message, argument=where),
    )
    messages: list[CudaDeviceInfo] = []
    for position, item in enumerate(readings):
        where = f"cuda_devices_info[{position}]"
        if isinstance(item, CudaDeviceInfo):
            check_outgoing(item, where)
            messages.append(item)
            continue
        if not isinstance(item, Mapping):
            raise InvalidArgumentError(
                f"{where} must be a CudaDeviceInfo or a dict, got {describe_value(item)}",
                argument=where,
            )
        try:
            entries = list(itertools.islice(item.items(), len(_CUDA_FIELDS) + 1))
        except Exception:  # noqa: BLE001 - a hostile mapping names the entry
            raise InvalidArgumentError(
                f"{where}: cannot read it, got {describe_value(item)}", argument=where
            ) from None
        message = CudaDeviceInfo()
        for key, value in entries:
            if not isinstance(key, str) or key not in _CUDA_FIELDS:
                raise InvalidArgumentError(
                    f"{where}: unknown key {describe_value(key)}; known keys: "
                    f"{', '.join(_CUDA_FIELDS)}",
                    argument=where,
                )
            setattr(message, key, value)
        check_outgoing(message, where)
        messages.append(message)
    return messages


class AsyncShardDirectorClient(AsyncDirectorClient[DirectorStub]):
    """The envoy's asyncio client for OpenFL 1.5-1.7's director, one instance per shard.

    Connects lazily on the first call, reconnects by itself after the director restarts,
    and must be closed (``await client.close()`` or ``async with``) on the loop it ran on.
    """

    stub_class = DirectorStub
    generation = Generation.INTERACTIVE

    def __init__(
        self,
        *,
        director_host: str,
        director_port: int,
        shard_name: str,
        tls: bool = True,
        root_certificate: PathLike | None = None,
        private_key: PathLike | None = None,
        certificate: PathLike | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        retry: RetryPolicy | None = RetryPolicy(),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.shard_name: str = check_text("shard_name", shard_name)
        super().__init__(
            director_host=director_host,
            director_port=director_port,
            tls=tls,
            root_certificate=root_certificate,
            private_key=private_key,
            certificate=certificate,
            timeout=timeout,
            keepalive_time=keepalive_time,
            keepalive_timeout=keepalive_timeout,
            retry=retry,
            max_message_size=max_message_size,
        )

    def _shard_not_found(self, details: str) -> ShardNotFoundError:
        return ShardNotFoundError.compatible()(
            f"{self._what('UpdateEnvoyStatus')}: the director at {self.address} does not know shard "
            f"{self.shard_name!r} ({details}); register it again",
            shard_name=self.shard_name,
            details=details,
        )

    async def report_shard_info(
        self,
        shard_descriptor: ShardDescriptor,
        cuda_devices: Iterable[SupportsIndex | CudaDeviceInfo] = (),
    ) -> bool:
        """Register this shard; True when the director accepted its shapes.

        The descriptor is validated first (ShardDescriptorError): nothing is sent otherwise.
        """
        info = shard_info_from_descriptor(
            shard_descriptor, shard_name=self.shard_name, cuda_devices=cuda_devices
        )
        logger.info("Registering shard %s with the director at %s", self.shard_name, self.address)
        request = UpdateShardInfoRequest(shard_info=info)
        timeout = self.options.timeout
        response = await self._connection.unary(
            self._what("UpdateShardInfo"),
            lambda channel: self._stub_on(channel).update_shard_info(request, timeout=timeout),
        )
        return bool(response.accepted)

    async def wait_experiment(self) -> str:
        """Long-poll until the director has an experiment for this shard; return its name.

        No deadline. A poll cut after it had been waiting (a director restart, a proxy's idle
        cut, GOAWAY too_many_pings, a director that stops answering pings) is sent again, so
        only a director that stays unreachable ends the wait with an error.
        """
        request = WaitExperimentRequest(collaborator_name=self.shard_name)
        response = await self._connection.long_poll(
            self._what("WaitExperiment"),
            lambda channel: self._stub_on(channel).wait_experiment(request),
        )
        if not response.experiment_name:
            raise ShardClientError(
                f"the director at {self.address} answered WaitExperiment with no experiment name"
            )
        return response.experiment_name

    async def send_health_check(
        self,
        *,
        envoy_name: str,
        is_experiment_running: bool,
        cuda_devices_info: CudaDevicesInfo | None = None,
    ) -> int:
        """Report liveness and GPU readings; return the seconds until the next health check.

        Raises ShardNotFoundError when the director no longer knows the shard.
        """
        request = UpdateEnvoyStatusRequest(
            name=check_text("envoy_name", envoy_name),
            is_experiment_running=bool(is_experiment_running),
            cuda_devices=cuda_device_messages(cuda_devices_info),
        )
        timeout = self.options.timeout

        async def call(channel: Channel) -> timedelta:
            reply = await self._stub_on(channel).update_envoy_status(request, timeout=timeout)
            return reply.health_check_period

        return await self._connection.health_check(
            self._what("UpdateEnvoyStatus"), call, not_found=self._shard_not_found
        )

    async def set_experiment_failed(
        self, experiment_name: str, error_code: int = 1, error_description: str = ""
    ) -> None:
        """Tell the director this shard could not run ``experiment_name``."""
        if isinstance(error_code, bool) or not isinstance(error_code, int):
            raise InvalidArgumentError(
                f"error_code must be an int, got {error_code!r}", argument="error_code"
            )
        if not 0 <= error_code < 2**32:
            raise InvalidArgumentError(
                f"error_code must fit in uint32, got {error_code!r}", argument="error_code"
            )
        request = SetExperimentFailedRequest(
            experiment_name=check_text("experiment_name", experiment_name),
            collaborator_name=self.shard_name,
            error_code=error_code,
            error_description=check_text("error_description", error_description, empty=True),
        )
        timeout = self.options.timeout
        await self._connection.unary(
            self._what("SetExperimentFailed"),
            lambda channel: self._stub_on(channel).set_experiment_failed(request, timeout=timeout),
        )

    def _data_request(self, experiment_name: str) -> GetExperimentDataRequest:
        return GetExperimentDataRequest(
            experiment_name=check_text("experiment_name", experiment_name),
            collaborator_name=self.shard_name,
        )

    def get_experiment_data(self, experiment_name: str) -> AsyncIterator[ExperimentData]:
        """Stream the experiment archive's chunks as the director sends them.

        Opening the stream is retried until the first chunk arrives; a failure after that
        ends the iteration with an error (the caller has consumed data). Each chunk must
        arrive within ``timeout`` seconds and be at most ``max_message_size`` bytes.
        """
        request = self._data_request(experiment_name)
        what = self._what("GetExperimentData")
        return self._connection.chunks(what, _GET_EXPERIMENT_DATA, request, _CHUNK)

    async def download_experiment(
        self,
        experiment_name: str,
        dest_dir: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
    ) -> DownloadedExperiment:
        """Download the archive into ``dest_dir`` as :func:`archive_filename` names it.

        The file appears only when complete; on any error or cancellation nothing in
        ``dest_dir`` changes. ``progress(bytes_so_far, None)`` is called per chunk.
        """
        return await self._connection.download(
            self._what("GetExperimentData"),
            _GET_EXPERIMENT_DATA,
            self._data_request(experiment_name),
            _CHUNK,
            experiment_name=experiment_name,
            dest_dir=dest_dir,
            progress=progress,
        )

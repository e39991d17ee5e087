"""AsyncEnvoyDirectorClient: the envoy RPCs of OpenFL 1.9's Workflow-API director.

Package ``openfl.experimental.workflow.director``: EnvoyConnectionRequest, UpdateEnvoyStatus
(no GPU readings), WaitExperiment and GetExperimentData. There is no failure report in this
protocol. The connection, deadlines, retries and error mapping are the shared
DirectorConnection's; this module holds the messages.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from datetime import timedelta

from grpclib.client import Channel

from shardclient._checks import check_text
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
from shardclient._client.translate import NotFound
from shardclient._client.transport import AsyncDirectorClient
from shardclient._errors import EnvoyNotFoundError, InvalidArgumentError, ShardClientError
from shardclient._generation import Generation
from shardclient.messages.workflow import (
    DirectorStub,
    ExperimentData,
    GetExperimentDataRequest,
    SendConnectionRequest,
    UpdateEnvoyStatusRequest,
    WaitExperimentRequest,
)

__all__ = ["AsyncEnvoyDirectorClient"]

logger = logging.getLogger("shardclient.client")

_GET_EXPERIMENT_DATA = "/openfl.experimental.workflow.director.Director/GetExperimentData"
_CHUNK = ChunkType(ExperimentData, "exp_data")


class AsyncEnvoyDirectorClient(AsyncDirectorClient[DirectorStub]):
    """The envoy's asyncio client for OpenFL 1.9's Workflow-API director, one per envoy.

    ``envoy_name`` is the collaborator name the frontend lists; the calls that take a name
    (as OpenFL's do) may name it instead. TLS is off unless asked for, as in OpenFL 1.9's
    own client. Connects lazily, reconnects after a director restart, and must be closed
    (``await client.close()`` or ``async with``) on the loop it ran on.
    """

    stub_class = DirectorStub
    generation = Generation.WORKFLOW

    def __init__(
        self,
        *,
        director_host: str,
        director_port: int,
        envoy_name: str | None = None,
        tls: bool = False,
        root_certificate: PathLike | None = None,
        private_key: PathLike | None = None,
        certificate: PathLike | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        retry: RetryPolicy | None = RetryPolicy(),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.envoy_name: str | None = (
            None if envoy_name is None else check_text("envoy_name", envoy_name)
        )
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

    def _name(self, envoy_name: str | None = None) -> str:
        """The envoy name a call uses: the one it was given, else the client's."""
        name = envoy_name if envoy_name is not None else self.envoy_name
        if name is None:
            raise InvalidArgumentError(
                "envoy_name must be given to the call or to the client, got None",
                argument="envoy_name",
            )
        return check_text("envoy_name", name)

    def _envoy_not_found(self, name: str) -> NotFound:
        def make(details: str) -> EnvoyNotFoundError:
            return EnvoyNotFoundError.compatible()(
                f"{self._what('UpdateEnvoyStatus')}: the director at {self.address} does not "
                f"know envoy {name!r} ({details}); connect again",
                envoy_name=name,
                details=details,
            )

        return make

    async def connect_envoy(self, envoy_name: str | None = None) -> bool:
        """Register this envoy with the director; True when accepted (OpenFL 1.9's director
        always accepts). The name becomes the client's when it had none."""
        name = self._name(envoy_name)
        if self.envoy_name is None:
            self.envoy_name = name
        logger.info("Connecting envoy %s to the director at %s", name, self.address)
        request = SendConnectionRequest(envoy_name=name)
        timeout = self.options.timeout
        response = await self._connection.unary(
            self._what("EnvoyConnectionRequest"),
            lambda channel: self._stub_on(channel).envoy_connection_request(
                request, timeout=timeout
            ),
        )
        return bool(response.accepted)

    async def wait_experiment(self) -> str:
        """Long-poll until the director has an experiment for this envoy; return its name.

        No deadline; a poll cut after it had been waiting is sent again (see
        AsyncShardDirectorClient.wait_experiment)."""
        request = WaitExperimentRequest(collaborator_name=self._name())
        response = await self._connection.long_poll(
            self._what("WaitExperiment"),
            lambda channel: self._stub_on(channel).wait_experiment(request),
        )
        if not response.experiment_name:
            raise ShardClientError(
                f"the director at {self.address} answered WaitExperiment with no experiment name"
            )
        return response.experiment_name

    async def send_health_check(self, *, envoy_name: str, is_experiment_running: bool) -> int:
        """Report liveness; return the seconds until the next health check.

        Raises EnvoyNotFoundError when the director no longer knows the envoy."""
        name = check_text("envoy_name", envoy_name)
        request = UpdateEnvoyStatusRequest(
            name=name, is_experiment_running=bool(is_experiment_running)
        )
        timeout = self.options.timeout

        async def call(channel: Channel) -> timedelta:
            reply = await self._stub_on(channel).update_envoy_status(request, timeout=timeout)
            return reply.health_check_period

        return await self._connection.health_check(
            self._what("UpdateEnvoyStatus"), call, not_found=self._envoy_not_found(name)
        )

    def _data_request(self, experiment_name: str) -> GetExperimentDataRequest:
        return GetExperimentDataRequest(
            experiment_name=check_text("experiment_name", experiment_name),
            collaborator_name=self._name(),
        )

    def get_experiment_data(self, experiment_name: str) -> AsyncIterator[ExperimentData]:
        """Stream the experiment archive's chunks (``.size``, ``.exp_data``) as they come;
        retried until the first chunk, each chunk within ``timeout`` and at most
        ``max_message_size`` bytes."""
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
        """Download the archive into ``dest_dir`` as :func:`archive_filename` names it; the
        file appears only when complete (see AsyncShardDirectorClient.download_experiment)."""
        return await self._connection.download(
            self._what("GetExperimentData"),
            _GET_EXPERIMENT_DATA,
            self._data_request(experiment_name),
            _CHUNK,
            experiment_name=experiment_name,
            dest_dir=dest_dir,
            progress=progress,
        )

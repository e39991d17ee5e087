"""EnvoyDirectorClient: the thread-safe sync facade of AsyncEnvoyDirectorClient.

Its method names and signatures are those of OpenFL 1.9's
``openfl.experimental.workflow.transport.grpc.director_client.EnvoyDirectorClient``, so
OpenFL 1.9's own Envoy runs on it unchanged; each forwards to the async client (see
shardclient._client.sync).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from shardclient._client.download import DownloadedExperiment, ProgressCallback
from shardclient._client.options import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
)
from shardclient._client.retry import RetryPolicy
from shardclient._client.sync import SyncClient
from shardclient._client.tls import PathLike
from shardclient._client.workflow_aio import AsyncEnvoyDirectorClient
from shardclient._errors import EnvoyNotFoundError
from shardclient.messages.workflow import DirectorStub, ExperimentData

__all__ = ["EnvoyDirectorClient"]


class EnvoyDirectorClient(SyncClient[AsyncEnvoyDirectorClient]):
    """Drop-in for OpenFL 1.9's
    ``openfl.experimental.workflow.transport.grpc.director_client.EnvoyDirectorClient``.

    Thread-safe, one connection and one event-loop thread of its own; Ctrl-C cancels a
    call, and ``close()`` (or leaving a ``with`` block) ends the calls still blocked in
    other threads with ClientClosedError. TLS is off unless asked for, as in OpenFL's.
    """

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
        aio = AsyncEnvoyDirectorClient(
            director_host=director_host,
            director_port=director_port,
            envoy_name=envoy_name,
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
        super().__init__(aio, f"shardclient-{envoy_name or 'envoy'}")

    @property
    def envoy_name(self) -> str | None:
        """The envoy's name (set by ``connect_envoy`` when the client was made without one)."""
        return self._aio.envoy_name

    @property
    def stub(self) -> DirectorStub:
        """The generated grpclib stub; await its methods on this client's loop only."""

        async def get() -> DirectorStub:
            return self._aio.stub

        return self._call(get)

    def connect_envoy(self, envoy_name: str | None = None) -> bool:
        """Register the envoy; True when the director accepted it (it always does)."""
        return self._call(lambda: self._aio.connect_envoy(envoy_name))

    def wait_experiment(self) -> str:
        """Block until the director has an experiment for this envoy; return its name."""
        return self._call(self._aio.wait_experiment)

    def get_experiment_data(self, experiment_name: str) -> Iterator[ExperimentData]:
        """Iterate over the experiment archive's chunks (each with ``.size``,
        ``.exp_data``); the client's loop reads up to two chunks ahead, and leaving the loop
        early closes the stream."""
        return self._iterate(lambda: self._aio.get_experiment_data(experiment_name))

    def download_experiment(
        self,
        experiment_name: str,
        dest_dir: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
    ) -> DownloadedExperiment:
        """Download the archive into ``dest_dir``; ``progress`` runs on the client's loop."""
        return self._call(
            lambda: self._aio.download_experiment(experiment_name, dest_dir, progress=progress)
        )

    def send_health_check(
        self, *, envoy_name: str, is_experiment_running: bool, raise_on_failure: bool = False
    ) -> int:
        """Send a health check; return the seconds until the next one is due.

        EnvoyNotFoundError when the director lost the envoy (OpenFL 1.9's ``except
        EnvoyNotFoundError`` catches it too, and connects again). Any other failure, once
        the retries are spent, is logged once per outage and answered with the seconds to
        wait (OpenFL's own client returns None there, and its Envoy's heartbeat thread dies
        of it); ``raise_on_failure=True`` raises it instead."""
        return self._health(
            lambda: self._aio.send_health_check(
                envoy_name=envoy_name, is_experiment_running=is_experiment_running
            ),
            raise_on_failure=raise_on_failure,
            lost=(EnvoyNotFoundError,),
        )

"""ShardDirectorClient: the thread-safe sync facade of AsyncShardDirectorClient.

Its method names and signatures are those of OpenFL 1.5-1.7's
``openfl.transport.grpc.director_client.ShardDirectorClient``, so OpenFL's own Envoy runs on
it unchanged; each forwards to the async client (see shardclient._client.sync).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import SupportsIndex

from shardclient._client.download import DownloadedExperiment, ProgressCallback
from shardclient._client.interactive_aio import AsyncShardDirectorClient, CudaDevicesInfo
from shardclient._client.options import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
)
from shardclient._client.retry import RetryPolicy
from shardclient._client.sync import SyncClient
from shardclient._client.tls import PathLike
from shardclient._descriptor import ShardDescriptor
from shardclient._errors import ShardNotFoundError
from shardclient.messages import CudaDeviceInfo, DirectorStub, ExperimentData

__all__ = ["ShardDirectorClient"]


class ShardDirectorClient(SyncClient[AsyncShardDirectorClient]):
    """Drop-in for ``openfl.transport.grpc.director_client.ShardDirectorClient``.

    One connection serves calls from any number of threads at once, run by one event-loop
    thread of the client's own (started on the first call). Ctrl-C during a call cancels
    it. ``close()`` (or leaving a ``with`` block), from any thread or a signal handler,
    ends calls still blocked in other threads with ClientClosedError and leaves no thread,
    socket or loop behind.
    """

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
        aio = AsyncShardDirectorClient(
            director_host=director_host,
            director_port=director_port,
            shard_name=shard_name,
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
        super().__init__(aio, f"shardclient-{shard_name}")
        self.shard_name = shard_name

    @property
    def stub(self) -> DirectorStub:
        """The generated grpclib stub; await its methods on this client's loop only."""

        async def get() -> DirectorStub:
            return self._aio.stub

        return self._call(get)

    def report_shard_info(
        self,
        shard_descriptor: ShardDescriptor,
        cuda_devices: Iterable[SupportsIndex | CudaDeviceInfo] = (),
    ) -> bool:
        """Register the shard; True when the director accepted it (validated first)."""
        return self._call(lambda: self._aio.report_shard_info(shard_descriptor, cuda_devices))

    def wait_experiment(self) -> str:
        """Block until the director has an experiment for this shard; return its name."""
        return self._call(self._aio.wait_experiment)

    def get_experiment_data(self, experiment_name: str) -> Iterator[ExperimentData]:
        """Iterate over the experiment archive's chunks (each with ``.size``, ``.npbytes``).

        The client's loop reads up to two chunks ahead of the caller; leaving the loop
        early (or dropping the iterator) closes the stream."""
        return self._iterate(lambda: self._aio.get_experiment_data(experiment_name))

    def download_experiment(
        self,
        experiment_name: str,
        dest_dir: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
    ) -> DownloadedExperiment:
        """Download the archive into ``dest_dir``; see AsyncShardDirectorClient's method.

        ``progress`` runs on the client's event loop: keep it quick, and do not call this
        client from it.
        """
        return self._call(
            lambda: self._aio.download_experiment(experiment_name, dest_dir, progress=progress)
        )

    def set_experiment_failed(
        self, experiment_name: str, error_code: int = 1, error_description: str = ""
    ) -> None:
        """Report that this shard could not run ``experiment_name``."""
        self._call(
            lambda: self._aio.set_experiment_failed(experiment_name, error_code, error_description)
        )

    def send_health_check(
        self,
        *,
        envoy_name: str,
        is_experiment_running: bool,
        cuda_devices_info: CudaDevicesInfo | None = None,
        raise_on_failure: bool = False,
    ) -> int:
        """Send a health check; return the seconds until the next one is due.

        ShardNotFoundError when the director lost the shard (register again; OpenFL's
        ``except ShardNotFoundError`` catches it too). When the director cannot be reached
        or answers with an error even after the retries, the failure is logged (once per
        outage) and the seconds to wait before trying again are returned, so that a health
        loop written for OpenFL (OpenFL's Envoy) lives through outages of any length and
        re-registers when the director is back; ``raise_on_failure=True`` raises the error
        instead (DirectorUnavailableError, DirectorRPCError, TLSHandshakeError)."""
        return self._health(
            lambda: self._aio.send_health_check(
                envoy_name=envoy_name,
                is_experiment_running=is_experiment_running,
                cuda_devices_info=cuda_devices_info,
            ),
            raise_on_failure=raise_on_failure,
            lost=(ShardNotFoundError,),
        )

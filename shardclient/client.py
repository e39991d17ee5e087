"""ShardDirectorClient: the thread-safe sync facade, signature-compatible with OpenFL's.

Each call runs the AsyncShardDirectorClient's coroutine on one event loop owned by this
object, run by the calling threads in turn (a SharedLoop); no protocol logic lives here.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import SupportsIndex, TypeVar


from shardclient.aio import AsyncShardDirectorClient, CudaDevicesInfo
from shardclient.descriptor import ShardDescriptor
from shardclient.download import DownloadedExperiment, ProgressCallback
from shardclient.errors import ClientClosedError
from shardclient.sharedloop import Keeper, LoopStoppedError, SharedLoop
from shardclient.messages import CudaDeviceInfo, DirectorStub, ExperimentData
from shardclient.options import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
)
from shardclient.retry import RetryPolicy
from shardclient.tls import PathLike

__all__ = ["ShardDirectorClient"]

T = TypeVar("T")

class ShardDirectorClient:
    """Drop-in for ``openfl.transport.grpc.director_client.ShardDirectorClient``.

    One connection serves calls from any number of threads at once; no thread of its own
    runs in the background (a calling thread runs the event loop while it waits).
    ``close()`` (or leaving a ``with`` block) ends calls still blocked in other threads
    with ClientClosedError and leaves no socket or loop behind.
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
        self._aio = AsyncShardDirectorClient(
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
        self.shard_name = shard_name
        self._lock = threading.Lock()
        self._loop: SharedLoop | None = SharedLoop()
        # a client never closed (as OpenFL code never closes its client) still closes its
        # connection and loop when it is collected or the interpreter exits
        self._finalizer = weakref.finalize(self, _close_quietly, self._loop, self._aio)

    @property
    def aio(self) -> AsyncShardDirectorClient:
        """The async client doing the work (use it only on this client's loop)."""
        return self._aio

    @property
    def stub(self) -> DirectorStub:
        """The generated grpclib stub; await its methods on this client's loop only."""

        async def get() -> DirectorStub:
            return self._aio.stub

        return self._call(get)

    def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func()`` on the client's loop and wait for it.

        Ctrl-C (or another exception raised in this thread while waiting) cancels the call
        and waits for its cleanup, e.g. a partial download's removal, before it propagates.
        """
        loop = self._loop
        if loop is None:
            raise ClientClosedError(f"client for {self._aio.address} is closed")
        if loop.in_loop():
            raise RuntimeError(
                "ShardDirectorClient methods cannot be called from code running on its own "
                "event loop (e.g. from a download progress callback): that would wait on itself"
            )

        async def run() -> T:
            return await func()

        try:
            return loop.run(run())
        except LoopStoppedError as exc:
            raise ClientClosedError(f"client for {self._aio.address} was closed") from exc

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
        """Iterate over the experiment archive's chunks (each with ``.size``, ``.npbytes``)."""
        stream = self._aio.get_experiment_data(experiment_name)
        return self._iterate(stream)

    def _iterate(self, stream: AsyncIterator[ExperimentData]) -> Iterator[ExperimentData]:
        closer = getattr(stream, "aclose", None)
        keeper: Keeper | None = None
        try:
            while True:
                try:
                    chunk = self._call(stream.__anext__)
                except StopAsyncIteration:
                    return
                loop = self._loop
                # the caller holds a chunk and the stream stays open: keep it served
                keeper = loop.keep_running() if loop is not None else None
                yield chunk
                if keeper is not None:
                    keeper.release()
                    keeper = None
        finally:
            if keeper is not None:
                keeper.release()
            loop = self._loop
            if closer is not None and loop is not None and not loop.closed:
                if loop.in_loop():  # collected on the loop itself: close the stream there
                    loop.spawn(_await(closer()))
                else:
                    self._call(closer)

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
    ) -> int:
        """Send a health check; return the seconds until the next one is due."""
        return self._call(
            lambda: self._aio.send_health_check(
                envoy_name=envoy_name,
                is_experiment_running=is_experiment_running,
                cuda_devices_info=cuda_devices_info,
            )
        )

    def close(self) -> None:
        """Close the connection and the event loop; safe to call more than once."""
        with self._lock:
            loop = self._loop
            if loop is None:
                return
            if loop.in_loop():
                raise RuntimeError("close() cannot be called from the client's own event loop")
            self._loop = None
            self._finalizer.detach()
            _close_quietly(loop, self._aio)

    def __enter__(self) -> ShardDirectorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _close_quietly(loop: SharedLoop, aio: AsyncShardDirectorClient) -> None:
    """Close ``aio``'s connection on ``loop``, then the loop (also run by the finalizer)."""
    try:
        if not loop.in_loop():
            loop.run(aio.close())
    except LoopStoppedError:
        pass
    finally:
        loop.stop()


async def _await(awaitable: Awaitable[object]) -> None:
    await awaitable

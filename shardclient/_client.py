"""ShardDirectorClient: the thread-safe sync facade, signature-compatible with OpenFL's.

Each call runs the AsyncShardDirectorClient's coroutine on the client's own event-loop
thread (a LoopThread, started on first use) and waits for it; no protocol logic lives here.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import queue
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Generic, SupportsIndex, TypeVar

from shardclient._aio import AsyncShardDirectorClient, CudaDevicesInfo
from shardclient._descriptor import ShardDescriptor
from shardclient._download import DownloadedExperiment, ProgressCallback
from shardclient._errors import ClientClosedError, ShardClientError, ShardNotFoundError
from shardclient._loop import LoopStoppedError, LoopThread
from shardclient._options import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
)
from shardclient._retry import RetryPolicy
from shardclient._tls import PathLike
from shardclient.messages import CudaDeviceInfo, DirectorStub, ExperimentData

__all__ = ["ShardDirectorClient"]

logger = logging.getLogger("shardclient")

T = TypeVar("T")

_OUTAGE_RETRY_DELAY = 10  # seconds between health checks in an outage, before any period
_READ_AHEAD = 2  # chunks a sync chunk iterator holds ready (4 MiB: one HTTP/2 stream window)
_END = object()


class ShardDirectorClient:
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
        self._health_period: int | None = None  # the last period the director named
        self._health_failing = False
        self._loop = LoopThread(f"shardclient-{shard_name}"[:40])
        # a client never closed (as OpenFL code never closes its client) still closes its
        # connection and loop when it is collected, or at interpreter exit (_close_at_exit)
        self._finalizer = weakref.finalize(self, _shut_down, self._loop, self._aio)
        self._finalizer.atexit = False
        _open_clients.add(self)

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

        async def run() -> T:
            return await func()

        try:
            return self._loop.run(run())
        except LoopStoppedError as exc:
            raise ClientClosedError(f"client for {self._aio.address} is closed") from exc

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
        ahead: _ReadAhead[ExperimentData] = _ReadAhead(_READ_AHEAD)
        call = self._loop.prepare(ahead.pump(self._aio.get_experiment_data(experiment_name)))
        try:
            self._loop.start(call)
            while True:
                try:
                    chunk = ahead.take()
                except BaseException:
                    self._loop.hold_if_abandoned(call)
                    raise
                if chunk is None:
                    return
                yield chunk
        except LoopStoppedError as exc:
            raise ClientClosedError(f"client for {self._aio.address} is closed") from exc
        finally:
            self._loop.cancel(call)  # closes the stream, whatever ended the iteration

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
        try:
            period = self._call(
                lambda: self._aio.send_health_check(
                    envoy_name=envoy_name,
                    is_experiment_running=is_experiment_running,
                    cuda_devices_info=cuda_devices_info,
                )
            )
        except (ShardNotFoundError, ClientClosedError):
            raise
        except ShardClientError as exc:
            if raise_on_failure:
                raise
            delay = self._health_period or _OUTAGE_RETRY_DELAY
            if not self._health_failing:
                logger.warning(
                    "Health check failed: %s; trying again every %s s until the director "
                    "answers (logged once per outage)",
                    exc,
                    delay,
                )
            self._health_failing = True
            return delay
        if self._health_failing:
            logger.warning("Health checks reach the director at %s again", self._aio.address)
        self._health_failing = False
        self._health_period = period
        return period

    def close(self) -> None:
        """Close the connection and the event loop; calls blocked in other threads end
        with ClientClosedError. Safe to call more than once, from any thread, and from a
        signal handler."""
        if self._loop.stopped:
            return
        self._finalizer.detach()
        _shut_down(self._loop, self._aio)

    def __enter__(self) -> ShardDirectorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _ReadAhead(Generic[T]):
    """Chunks pumped off an async iterator on the loop into a queue the caller reads from,
    at most ``depth`` of them unread (HTTP/2 flow control holds the rest at the director)."""

    def __init__(self, depth: int) -> None:
        self._items: queue.SimpleQueue[tuple[T | None, BaseException | None]] = queue.SimpleQueue()
        self._depth = depth
        self._room: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def pump(self, chunks: AsyncIterator[T]) -> None:
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Semaphore(self._depth)
        try:
            async with contextlib.aclosing(chunks):  # type: ignore[type-var]  # an async generator
                async for chunk in chunks:
                    await self._room.acquire()
                    self._items.put((chunk, None))
        except asyncio.CancelledError:
            self._items.put((None, LoopStoppedError("the chunk stream was cancelled")))
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._items.put((None, exc))
            return
        self._items.put((None, None))

    def take(self) -> T | None:
        """The next chunk (None at the end); raises what ended the stream. Blocks; Ctrl-C
        interrupts it."""
        chunk, error = self._items.get()
        if error is not None:
            raise error
        if chunk is not None and self._loop is not None and self._room is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to free
                self._loop.call_soon_threadsafe(self._room.release)
        return chunk


def _shut_down(loop: LoopThread, aio: AsyncShardDirectorClient, *, at_exit: bool = False) -> None:
    """Close ``aio``'s connection on ``loop``, then stop the loop (also the finalizer). At
    interpreter exit, the threads still waiting on a call are left blocked (see
    LoopThread.abandon_waiters)."""
    if at_exit:
        loop.abandon_waiters()
    try:
        if loop.running and not loop.in_loop():
            loop.run(aio.close())
    except LoopStoppedError:
        pass
    finally:
        loop.stop()


_open_clients: weakref.WeakSet[ShardDirectorClient] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close every client still open when the interpreter exits (after its non-daemon threads
    ended, and after atexit handlers registered later, which may still close them as usual)."""
    for client in list(_open_clients):
        if client._finalizer.detach() is not None:
            _shut_down(client._loop, client._aio, at_exit=True)

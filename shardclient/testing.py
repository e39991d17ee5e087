"""LocalDirector: an in-process director for tests and the demo. Not a production director.

It answers the envoy's five RPCs the way openfl 1.5.1-1.7.1's director does: shapes must
match as lists of strings, health checks from unknown shards get NOT_FOUND "Unknown shard
<name>", WaitExperiment blocks until an experiment names the collaborator, archives stream
in 2 MiB chunks, failures are recorded. Like OpenFL's director, it answers WaitExperiment at
once with the experiment a collaborator already got, for as long as that experiment is
neither finished (``finish_experiment``: its aggregator ran its last round) nor removed
(``remove_experiment``: the frontend's RemoveExperimentData); a failure report ends neither.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from grpclib.server import Server

from shardclient.messages import (
    CudaDeviceInfo,
    DirectorBase,
    ExperimentData,
    GetExperimentDataRequest,
    SetExperimentFailedRequest,
    SetExperimentFailedResponse,
    ShardInfo,
    UpdateEnvoyStatusRequest,
    UpdateEnvoyStatusResponse,
    UpdateShardInfoRequest,
    UpdateShardInfoResponse,
    WaitExperimentRequest,
    WaitExperimentResponse,
)

__all__ = ["LocalDirector", "EnvoyStatus", "CHUNK_SIZE"]

CHUNK_SIZE = 2 * 1024 * 1024
"""Archive chunk size, as OpenFL's director sends it."""


@dataclass(frozen=True)
class EnvoyStatus:
    """The last health check a shard sent."""

    is_experiment_running: bool
    cuda_devices: tuple[CudaDeviceInfo, ...]


@dataclass
class _Experiment:
    name: str
    archive: bytes | Path
    collaborators: frozenset[str]


@dataclass
class _State:
    """Everything the director knows; touched only on the server's event loop."""

    sample_shape: list[str]
    target_shape: list[str]
    health_check_period: float
    shards: dict[str, ShardInfo] = field(default_factory=dict)
    statuses: dict[str, EnvoyStatus] = field(default_factory=dict)
    experiments: dict[str, _Experiment] = field(default_factory=dict)
    queued: dict[str, list[str]] = field(default_factory=dict)
    current: dict[str, str] = field(default_factory=dict)  # collaborator -> its experiment
    finished: set[str] = field(default_factory=set)
    waits: dict[str, int] = field(default_factory=dict)
    failures: list[SetExperimentFailedRequest] = field(default_factory=list)
    changed: asyncio.Condition | None = None

    def condition(self) -> asyncio.Condition:
        if self.changed is None:
            self.changed = asyncio.Condition()
        return self.changed


class _DirectorService(DirectorBase):
    def __init__(self, state: _State) -> None:
        self._state = state

    async def update_shard_info(
        self, update_shard_info_request: UpdateShardInfoRequest
    ) -> UpdateShardInfoResponse:
        info = update_shard_info_request.shard_info
        state = self._state
        accepted = (
            list(info.sample_shape) == state.sample_shape
            and list(info.target_shape) == state.target_shape
        )
        if accepted:
            state.shards[info.node_info.name] = info
        return UpdateShardInfoResponse(accepted=accepted)

    async def update_envoy_status(
        self, update_envoy_status_request: UpdateEnvoyStatusRequest
    ) -> UpdateEnvoyStatusResponse:
        request = update_envoy_status_request
        shard = self._state.shards.get(request.name)
        if shard is None:
            raise GRPCError(Status.NOT_FOUND, f"Unknown shard {request.name}")
        if len(request.cuda_devices) > len(shard.node_info.cuda_devices):
            # openfl 1.6 stores readings by position into the registered list and fails
            # with an IndexError/KeyError (UNKNOWN) when the shard registered fewer.
            raise GRPCError(Status.UNKNOWN, "Unexpected error")
        self._state.statuses[request.name] = EnvoyStatus(
            is_experiment_running=request.is_experiment_running,
            cuda_devices=tuple(request.cuda_devices),
        )
        return UpdateEnvoyStatusResponse(
            health_check_period=timedelta(seconds=self._state.health_check_period)
        )

    async def wait_experiment(
        self, wait_experiment_request: WaitExperimentRequest
    ) -> WaitExperimentResponse:
        name = wait_experiment_request.collaborator_name
        state = self._state
        state.waits[name] = state.waits.get(name, 0) + 1
        current = state.current.get(name)
        if current in state.experiments and current not in state.finished:
            return WaitExperimentResponse(experiment_name=current)  # OpenFL's reconnect path
        changed = state.condition()
        async with changed:
            await changed.wait_for(lambda: bool(state.queued.get(name)))
            experiment = state.queued[name].pop(0)
        state.current[name] = experiment
        return WaitExperimentResponse(experiment_name=experiment)

    async def get_experiment_data(
        self, get_experiment_data_request: GetExperimentDataRequest
    ) -> AsyncIterator[ExperimentData]:
        experiment = self._state.experiments.get(get_experiment_data_request.experiment_name)
        if experiment is None:
            raise GRPCError(
                Status.NOT_FOUND,
                f"Unknown experiment {get_experiment_data_request.experiment_name}",
            )
        for chunk in _chunks(experiment.archive):
            yield ExperimentData(size=len(chunk), npbytes=chunk)

    async def set_experiment_failed(
        self, set_experiment_failed_request: SetExperimentFailedRequest
    ) -> SetExperimentFailedResponse:
        self._state.failures.append(set_experiment_failed_request)
        return SetExperimentFailedResponse()


def _chunks(archive: bytes | Path) -> Iterable[bytes]:
    if isinstance(archive, bytes):
        view = memoryview(archive)
        for start in range(0, len(archive), CHUNK_SIZE):
            yield bytes(view[start : start + CHUNK_SIZE])
        return
    with archive.open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            yield chunk


def _shape(name: str, shape: Sequence[str | int]) -> list[str]:
    if isinstance(shape, (str, bytes)):
        raise ValueError(f"{name} must be a sequence, got {shape!r}")
    return [str(dim) for dim in shape]


class _RestartableServer(Server):
    """A grpclib Server whose stop also drops open connections, as a process exit would.

    grpclib's close() cancels running calls but leaves the TCP connections open, so a
    client would keep talking to a server that no longer answers.
    """

    def __init__(self, handlers: list[DirectorBase]) -> None:
        super().__init__(handlers)
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self._protocols.add(protocol)
        return protocol

    def drop_connections(self) -> None:
        for protocol in list(self._protocols):
            connection = getattr(protocol, "connection", None)
            if connection is not None:
                connection.close()


class LocalDirector:
    """A director on 127.0.0.1 for tests and demos, served from a background thread
    (``with``) or the current loop (``async with``)."""

    def __init__(
        self,
        *,
        sample_shape: Sequence[str | int],
        target_shape: Sequence[str | int],
        health_check_period: float = 60,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._state = _State(
            sample_shape=_shape("sample_shape", sample_shape),
            target_shape=_shape("target_shape", target_shape),
            health_check_period=health_check_period,
        )
        self.host = host
        self.port: int = port
        self._tls = tls
        self._server: _RestartableServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._portal: BlockingPortal | None = None
        self._exit_stack = ExitStack()

    # -- what tests read -------------------------------------------------------------

    @property
    def shards(self) -> dict[str, ShardInfo]:
        """Accepted shards by name (a snapshot)."""
        return dict(self._state.shards)

    @property
    def statuses(self) -> dict[str, EnvoyStatus]:
        """The last health check of each shard (a snapshot)."""
        return dict(self._state.statuses)

    @property
    def failures(self) -> list[SetExperimentFailedRequest]:
        """The SetExperimentFailed requests received, oldest first (a snapshot)."""
        return list(self._state.failures)

    @property
    def waits(self) -> dict[str, int]:
        """How many WaitExperiment calls each collaborator made (a snapshot)."""
        return dict(self._state.waits)

    def forget_shards(self) -> None:
        """Drop every registration, as a restarted director has none (callable any time)."""
        self._state.shards.clear()

    def forget_everything(self) -> None:
        """Drop registrations, experiments and what was handed to whom, as a restarted
        director's memory is empty (call it while stopped)."""
        state = self._state
        for memory in (state.shards, state.statuses, state.experiments, state.queued,
                       state.current):  # fmt: skip
            memory.clear()
        state.finished.clear()

    # -- serving -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on the current loop; binds ``port`` (0 picks a free one, kept)."""
        if self._server is not None:
            raise RuntimeError("LocalDirector is already serving")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.host, self.port))
        except BaseException:
            sock.close()
            raise
        bound: int = sock.getsockname()[1]
        self.port = bound
        self._state.changed = None  # a Condition belongs to one loop
        server = _RestartableServer([_DirectorService(self._state)])
        await server.start(sock=sock, ssl=self._tls)
        self._server = server
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """Stop serving, as if the process exited: close the listening socket, cancel the
        calls in progress and drop every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            server.drop_connections()
            await server.wait_closed()

    async def __aenter__(self) -> LocalDirector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> LocalDirector:
        portal = self._exit_stack.enter_context(start_blocking_portal(name="local-director"))
        try:
            portal.call(self.start)
        except BaseException:
            self._exit_stack.close()
            raise
        self._portal = portal
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        portal, self._portal = self._portal, None
        try:
            if portal is not None:
                portal.call(self.stop)
        finally:
            self._exit_stack.close()

    def stop_sync(self) -> None:
        """Stop serving, keeping the port (sync mode; ``start_sync`` serves again)."""
        if self._portal is None:
            raise RuntimeError("stop_sync needs the director started with `with`")
        self._portal.call(self.stop)

    def start_sync(self) -> None:
        """Serve again on the same port after ``stop_sync``."""
        if self._portal is None:
            raise RuntimeError("start_sync needs the director started with `with`")
        self._portal.call(self.start)

    def restart_sync(self) -> None:
        """Stop and start again on the same port (for reconnection tests, sync mode)."""
        if self._portal is None:
            raise RuntimeError("restart_sync needs the director started with `with`")
        self._portal.call(self.stop)
        self._portal.call(self.start)

    # -- feeding experiments -----------------------------------------------------------

    def submit_experiment(
        self, name: str, archive: bytes | os.PathLike[str], collaborators: Iterable[str]
    ) -> None:
        """Queue an experiment for ``collaborators``; callable from any thread."""
        payload = archive if isinstance(archive, bytes) else Path(archive)
        if isinstance(payload, Path) and not payload.exists():
            raise FileNotFoundError(f"experiment archive not found: {payload}")
        experiment = _Experiment(name, payload, frozenset(collaborators))
        self._on_loop(lambda: self._enqueue(experiment))

    def finish_experiment(self, name: str) -> None:
        """Mark ``name`` finished (its last round done): it is no longer offered again."""
        self._on_loop(lambda: self._finish(name))

    def remove_experiment(self, name: str) -> None:
        """Forget ``name`` and its archive, as RemoveExperimentData does."""
        self._on_loop(lambda: self._remove(name))

    async def _finish(self, name: str) -> None:
        self._state.finished.add(name)

    async def _remove(self, name: str) -> None:
        self._state.experiments.pop(name, None)
        for queue in self._state.queued.values():
            while name in queue:
                queue.remove(name)

    def _on_loop(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run the coroutine ``make()`` on the serving loop, from any thread (waiting for it
        from other threads; scheduled when called on the loop itself)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("LocalDirector is not serving")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(make())
        else:
            asyncio.run_coroutine_threadsafe(make(), loop).result()

    async def _enqueue(self, experiment: _Experiment) -> None:
        state = self._state
        state.experiments[experiment.name] = experiment
        changed = state.condition()
        async with changed:
            for collaborator in sorted(experiment.collaborators):
                state.queued.setdefault(collaborator, []).append(experiment.name)
            changed.notify_all()

"""In-process directors for tests and the demo, on 127.0.0.1. Not production directors.

``LocalDirector`` answers the envoy's five RPCs the way openfl 1.5.1-1.7.1's director does:
shapes must match as lists of strings, health checks from unknown shards get NOT_FOUND
"Unknown shard <name>", failures are recorded. ``LocalWorkflowDirector`` answers the envoy's
four RPCs the way openfl 1.9's Workflow-API director does: any envoy may connect, health
checks from unknown envoys get NOT_FOUND "Unknown envoy <name>".

Both block WaitExperiment until an experiment names the collaborator and stream archives in
2 MiB chunks. Like OpenFL's directors, they answer WaitExperiment at once with the experiment
a collaborator already got, for as long as that experiment is neither finished
(``finish_experiment``: its aggregator ran its last round) nor removed
(``remove_experiment``: the frontend's RemoveExperimentData); a failure report ends neither.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal
from betterproto.grpc.grpclib_server import ServiceBase
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from shardclient._client.http2.server import RestartableServer
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
    workflow,
)

__all__ = ["CHUNK_SIZE", "EnvoyStatus", "LocalDirector", "LocalWorkflowDirector"]

CHUNK_SIZE = 2 * 1024 * 1024
"""Archive chunk size, as OpenFL's director sends it."""

D = TypeVar("D", bound="_LocalServer")


@dataclass(frozen=True)
class EnvoyStatus:
    """The last health check an envoy sent (OpenFL 1.9's carry no GPU readings)."""

    is_experiment_running: bool
    cuda_devices: tuple[CudaDeviceInfo, ...] = ()


@dataclass
class _Experiment:
    name: str
    archive: bytes | Path
    collaborators: frozenset[str]


@dataclass
class _Queues:
    """The experiments and who gets which; touched only on the server's event loop."""

    experiments: dict[str, _Experiment] = field(default_factory=dict)
    queued: dict[str, list[str]] = field(default_factory=dict)
    current: dict[str, str] = field(default_factory=dict)  # collaborator -> its experiment
    finished: set[str] = field(default_factory=set)
    waits: dict[str, int] = field(default_factory=dict)
    health_checks: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Condition | None = None

    def condition(self) -> asyncio.Condition:
        if self.changed is None:
            self.changed = asyncio.Condition()
        return self.changed

    async def wait_for(self, collaborator: str) -> str:
        """WaitExperiment: the experiment ``collaborator`` already has while it is neither
        finished nor removed (OpenFL's reconnect path), else the next one queued for it."""
        self.waits[collaborator] = self.waits.get(collaborator, 0) + 1
        current = self.current.get(collaborator)
        if current in self.experiments and current not in self.finished:
            return current
        changed = self.condition()
        async with changed:
            await changed.wait_for(lambda: bool(self.queued.get(collaborator)))
            experiment = self.queued[collaborator].pop(0)
        self.current[collaborator] = experiment
        return experiment

    def count_health_check(self, envoy: str) -> None:
        self.health_checks[envoy] = self.health_checks.get(envoy, 0) + 1

    def forget(self) -> None:
        """What a restarted director no longer knows."""
        for memory in (self.experiments, self.queued, self.current):
            memory.clear()
        self.finished.clear()


@dataclass
class _State:
    """What the 1.5-1.7 director knows beside its queues."""

    sample_shape: list[str]
    target_shape: list[str]
    health_check_period: float
    shards: dict[str, ShardInfo] = field(default_factory=dict)
    statuses: dict[str, EnvoyStatus] = field(default_factory=dict)
    failures: list[SetExperimentFailedRequest] = field(default_factory=list)
    queues: _Queues = field(default_factory=_Queues)


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
        self._state.queues.count_health_check(request.name)
        return UpdateEnvoyStatusResponse(
            health_check_period=timedelta(seconds=self._state.health_check_period)
        )

    async def wait_experiment(
        self, wait_experiment_request: WaitExperimentRequest
    ) -> WaitExperimentResponse:
        name = await self._state.queues.wait_for(wait_experiment_request.collaborator_name)
        return WaitExperimentResponse(experiment_name=name)

    async def get_experiment_data(
        self, get_experiment_data_request: GetExperimentDataRequest
    ) -> AsyncIterator[ExperimentData]:
        name = get_experiment_data_request.experiment_name
        experiment = self._state.queues.experiments.get(name)
        if experiment is None:
            raise GRPCError(Status.NOT_FOUND, f"Unknown experiment {name}")
        for chunk in _chunks(experiment.archive):
            yield ExperimentData(size=len(chunk), npbytes=chunk)

    async def set_experiment_failed(
        self, set_experiment_failed_request: SetExperimentFailedRequest
    ) -> SetExperimentFailedResponse:
        self._state.failures.append(set_experiment_failed_request)
        return SetExperimentFailedResponse()


@dataclass
class _WorkflowState:
    """What the 1.9 director knows beside its queues."""

    health_check_period: float
    envoys: dict[str, EnvoyStatus | None] = field(default_factory=dict)  # None: no check yet
    connections: dict[str, int] = field(default_factory=dict)
    queues: _Queues = field(default_factory=_Queues)


class _WorkflowService(workflow.DirectorBase):
    def __init__(self, state: _WorkflowState) -> None:
        self._state = state

    async def envoy_connection_request(
        self, send_connection_request: workflow.SendConnectionRequest
    ) -> workflow.RequestAccepted:
        name = send_connection_request.envoy_name
        self._state.envoys[name] = None  # openfl 1.9 accepts anyone, replacing the entry
        self._state.connections[name] = self._state.connections.get(name, 0) + 1
        return workflow.RequestAccepted(accepted=True)

    async def update_envoy_status(
        self, update_envoy_status_request: workflow.UpdateEnvoyStatusRequest
    ) -> workflow.UpdateEnvoyStatusResponse:
        request = update_envoy_status_request
        if request.name not in self._state.envoys:
            raise GRPCError(Status.NOT_FOUND, f"Unknown envoy {request.name}")
        self._state.envoys[request.name] = EnvoyStatus(request.is_experiment_running)
        self._state.queues.count_health_check(request.name)
        return workflow.UpdateEnvoyStatusResponse(
            health_check_period=timedelta(seconds=self._state.health_check_period)
        )

    async def wait_experiment(
        self, wait_experiment_request: workflow.WaitExperimentRequest
    ) -> workflow.WaitExperimentResponse:
        name = await self._state.queues.wait_for(wait_experiment_request.collaborator_name)
        return workflow.WaitExperimentResponse(experiment_name=name)

    async def get_experiment_data(
        self, get_experiment_data_request: workflow.GetExperimentDataRequest
    ) -> AsyncIterator[workflow.ExperimentData]:
        name = get_experiment_data_request.experiment_name
        experiment = self._state.queues.experiments.get(name)
        if experiment is None:  # openfl 1.9 fails with the KeyError of its lookup
            raise GRPCError(Status.UNKNOWN, f"Unexpected <class 'KeyError'>: {name!r}")
        for chunk in _chunks(experiment.archive):
            yield workflow.ExperimentData(size=len(chunk), exp_data=chunk)


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


class _LocalServer:
    """Serving a director's service on 127.0.0.1 from a background thread (``with``) or the
    current loop (``async with``), and feeding it experiments."""

    def __init__(self, queues: _Queues, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self._queues = queues
        self.host = host
        self.port: int = port
        self._tls = tls
        self._server: RestartableServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._portal: BlockingPortal | None = None
        self._exit_stack = ExitStack()

    def _services(self) -> list[ServiceBase]:
        """This director's service, and the other generation's answering UNIMPLEMENTED to
        every call (as OpenFL's gRPC C-core directors answer a path they do not serve;
        grpclib's own answer to an unknown path lacks a content-type, which its client
        reports as UNKNOWN)."""
        raise NotImplementedError

    @property
    def waits(self) -> dict[str, int]:
        """How many WaitExperiment calls each collaborator made (a snapshot)."""
        return dict(self._queues.waits)

    @property
    def health_checks(self) -> dict[str, int]:
        """How many health checks each envoy had answered (a snapshot)."""
        return dict(self._queues.health_checks)

    # -- serving -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on the current loop; binds ``port`` (0 picks a free one, kept)."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already serving")
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
        self._queues.changed = None  # a Condition belongs to one loop
        server = RestartableServer(self._services())
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

    async def __aenter__(self: D) -> D:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self: D) -> D:
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
        self._queues.finished.add(name)

    async def _remove(self, name: str) -> None:
        self._queues.experiments.pop(name, None)
        for queue in self._queues.queued.values():
            while name in queue:
                queue.remove(name)

    def _on_loop(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run the coroutine ``make()`` on the serving loop, from any thread (waiting for it
        from other threads; scheduled when called on the loop itself)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"{type(self).__name__} is not serving")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(make())
        else:
            asyncio.run_coroutine_threadsafe(make(), loop).result()

    async def _enqueue(self, experiment: _Experiment) -> None:
        state = self._queues
        state.experiments[experiment.name] = experiment
        changed = state.condition()
        async with changed:
            for collaborator in sorted(experiment.collaborators):
                state.queued.setdefault(collaborator, []).append(experiment.name)
            changed.notify_all()


class LocalDirector(_LocalServer):
    """OpenFL 1.5-1.7's director (interactive API), in process."""

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
        super().__init__(self._state.queues, host, port, tls)

    def _services(self) -> list[ServiceBase]:
        return [_DirectorService(self._state), workflow.DirectorBase()]

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

    def forget_shards(self) -> None:
        """Drop every registration, as a restarted director has none (callable any time)."""
        self._state.shards.clear()

    def forget_everything(self) -> None:
        """Drop registrations, experiments and what was handed to whom, as a restarted
        director's memory is empty (call it while stopped)."""
        self._state.shards.clear()
        self._state.statuses.clear()
        self._queues.forget()


class LocalWorkflowDirector(_LocalServer):
    """OpenFL 1.9's Workflow-API director, in process (the envoy's RPCs only)."""

    def __init__(
        self,
        *,
        health_check_period: float = 60,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._state = _WorkflowState(health_check_period=health_check_period)
        super().__init__(self._state.queues, host, port, tls)

    def _services(self) -> list[ServiceBase]:
        return [_WorkflowService(self._state), DirectorBase()]

    @property
    def envoys(self) -> dict[str, EnvoyStatus | None]:
        """Connected envoys and their last health check (None before the first; a snapshot)."""
        return dict(self._state.envoys)

    @property
    def connections(self) -> dict[str, int]:
        """How many EnvoyConnectionRequest calls each envoy made (a snapshot)."""
        return dict(self._state.connections)

    def forget_envoys(self) -> None:
        """Drop every connected envoy, as a restarted director has none (callable any time)."""
        self._state.envoys.clear()

    def forget_everything(self) -> None:
        """Drop envoys, experiments and what was handed to whom, as a restarted director's
        memory is empty (call it while stopped)."""
        self._state.envoys.clear()
        self._queues.forget()

"""The envoy loop: register, keep health checks going, wait for experiments, fetch, hand off,
report. Built on the public AsyncShardDirectorClient only.

Semantics follow OpenFL's envoy, with its failure modes fixed: the health loop survives every
transient error and GPU failure (each kind logged once until it recovers), a lost
registration is renewed, and a failed experiment command is reported with its exit code and
the tail of its stderr.
"""

from __future__ import annotations

import collections
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.abc import Process

from shardclient.aio import AsyncShardDirectorClient
from shardclient.descriptor import ShardDescriptor, StaticShardDescriptor
from shardclient.download import DownloadedExperiment, ProgressCallback
from shardclient.errors import (
    CorruptExperimentDataError,
    DirectorProtocolError,
    DirectorRPCError,
    DirectorUnavailableError,
    GpuInfoError,
    ShardClientError,
    ShardNotFoundError,
    ShardRefusedError,
)
from shardclient.gpu import GpuMonitor
from shardclient.messages import CudaDeviceInfo

__all__ = ["Envoy", "ExperimentOutcome", "STDERR_TAIL"]

logger = logging.getLogger("shardclient.envoy")

STDERR_TAIL = 4000
"""Characters of a failed command's stderr sent to the director as the error description."""

_FIRST_PERIOD = 10.0  # seconds between health checks until the director names its period
_TERMINATE_GRACE = 10.0  # seconds a command gets to exit after SIGTERM before SIGKILL


@dataclass(frozen=True)
class ExperimentOutcome:
    """One experiment handled: its archive, and the command's exit code (None: no command)."""

    name: str
    archive: DownloadedExperiment
    exit_code: int | None

    @property
    def failed(self) -> bool:
        return self.exit_code not in (None, 0)


class _OnceLog:
    """Logs each kind of problem once until things recover, then says so."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._seen: set[str] = set()

    def problem(self, kind: str, message: str) -> None:
        if kind not in self._seen:
            self._seen.add(kind)
            logger.warning("%s: %s (logged once until it recovers)", self._what, message)
        else:
            logger.debug("%s: %s", self._what, message)

    def recovered(self) -> None:
        if self._seen:
            logger.info("%s: recovered", self._what)
            self._seen.clear()


class Envoy:
    """One shard's participation in federations, driven by an AsyncShardDirectorClient."""

    def __init__(
        self,
        client: AsyncShardDirectorClient,
        *,
        descriptor: ShardDescriptor,
        cuda_devices: Sequence[int] = (),
        workdir: Path,
        command: str | None = None,
        monitor: GpuMonitor | None = None,
        progress: Callable[[str], ProgressCallback | None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """``progress(name)`` makes the progress callback for one download; ``sleep`` waits
        between health checks (tests replace it to step the loop without real time)."""
        self.client = client
        self.descriptor = descriptor
        self.cuda_devices = tuple(cuda_devices)
        self.workdir = workdir
        self.command = shlex.split(command) if command else None
        self.monitor = monitor
        self._progress = progress
        self._sleep = sleep
        self.is_experiment_running = False
        self.health_checks_sent = 0
        self._health_log = _OnceLog("health check")
        self._gpu_log = _OnceLog("GPU readings")

    # -- registration and health ----------------------------------------------------------

    async def register(self) -> None:
        """Register the shard; ShardRefusedError (with the shapes sent) when refused."""
        accepted = await self.client.report_shard_info(self.descriptor, self.cuda_devices)
        if not accepted:
            sent = StaticShardDescriptor.from_descriptor(self.descriptor)
            sample = [str(d) for d in sent.sample_shape]
            target = [str(d) for d in sent.target_shape]
            raise ShardRefusedError(
                f"the director at {self.client.address} refused shard "
                f"{self.client.shard_name!r}: sample_shape {sample} and target_shape {target} "
                "do not match its configuration",
                sample_shape=sample,
                target_shape=target,
            )
        logger.info("Shard %s registered with %s", self.client.shard_name, self.client.address)

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

    async def health_check(self) -> float:
        """Send one health check, re-registering if the director lost the shard; return the
        seconds until the next one is due."""

        async def send() -> int:
            # NVML calls (and a first CUDA-order lookup) block: keep them off the loop
            readings = await anyio.to_thread.run_sync(self.readings)
            return await self.client.send_health_check(
                envoy_name=self.client.shard_name,
                is_experiment_running=self.is_experiment_running,
                cuda_devices_info=readings,
            )

        try:
            period = await send()
        except ShardNotFoundError:
            logger.warning("The director lost shard %s; registering again", self.client.shard_name)
            await self.register()
            period = await send()
        self.health_checks_sent += 1
        return float(period)

    async def health_loop(self) -> None:
        """Send health checks forever at the director's period, surviving every failure."""
        period = _FIRST_PERIOD
        while True:
            try:
                answered = await self.health_check()
                # a period <= 0 would make a busy loop: keep the last good one
                period = answered if answered > 0 else period
                self._health_log.recovered()
            except ShardClientError as exc:
                self._health_log.problem(type(exc).__name__, str(exc))
            await self._sleep(period)

    # -- experiments -------------------------------------------------------------------------

    async def handle_next_experiment(self) -> ExperimentOutcome:
        """Wait for an experiment, download it, run the command on it, report a failure."""
        name = await self.client.wait_experiment()
        logger.info("Experiment %s received", name)
        self.is_experiment_running = True
        try:
            progress = self._progress(name) if self._progress is not None else None
            archive = await self.client.download_experiment(name, self.workdir, progress=progress)
            logger.info(
                "Experiment %s downloaded: %s (%d bytes, sha256 %s)",
                name, archive.path, archive.size, archive.sha256,
            )
            if self.command is None:
                return ExperimentOutcome(name, archive, None)
            code, tail = await self._run_command(name, archive)
        finally:
            self.is_experiment_running = False
        if code != 0:
            logger.warning("Experiment %s: the command exited with %d; reporting", name, code)
            try:
                await self.client.set_experiment_failed(
                    name, error_code=code, error_description=tail
                )
            except ShardClientError as exc:
                # openfl 1.6 answers UNKNOWN when the experiment's aggregator never started
                logger.warning("Experiment %s: the failure report failed: %s", name, exc)
        return ExperimentOutcome(name, archive, code)

    async def _run_command(self, name: str, archive: DownloadedExperiment) -> tuple[int, str]:
        assert self.command is not None
        env = dict(os.environ)
        env["SHARDCLIENT_ARCHIVE"] = str(archive.path)
        env["SHARDCLIENT_EXPERIMENT"] = name
        logger.info("Running %s", shlex.join(self.command))
        try:
            process = await anyio.open_process(
                self.command,
                stdin=None,
                stdout=None,
                stderr=subprocess.PIPE,
                env=env,
                cwd=self.workdir,
                start_new_session=True,  # its own process group: stopping it stops its children
            )
        except OSError as exc:
            message = f"cannot run {self.command[0]!r}: {exc.strerror or exc}"
            logger.error("Experiment %s: %s", name, message)
            return 127, message
        tail: collections.deque[str] = collections.deque()
        try:
            await self._relay_stderr(process, tail)
            code = await process.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _terminate(process)
            raise
        await process.aclose()
        return code, "".join(tail)[-STDERR_TAIL:]

    @staticmethod
    async def _relay_stderr(process: Process, tail: collections.deque[str]) -> None:
        """Copy the command's stderr to ours as it comes, keeping its last characters."""
        if process.stderr is None:
            return
        kept = 0
        async for data in process.stderr:
            sys.stderr.buffer.write(data)
            sys.stderr.buffer.flush()
            text = data.decode("utf-8", errors="replace")
            tail.append(text)
            kept += len(text)
            while kept - len(tail[0]) >= STDERR_TAIL:
                kept -= len(tail.popleft())

    async def serve(self, *, once: bool = False) -> list[ExperimentOutcome]:
        """Register, then handle experiments (one with ``once``) while health checks run.

        Without ``once``, a director that goes away or a broken download is logged and the
        envoy waits again; with ``once`` such errors end the call.
        """
        await self.register()
        outcomes: list[ExperimentOutcome] = []
        async with anyio.create_task_group() as group:
            group.start_soon(self.health_loop)
            while True:
                try:
                    outcomes.append(await self.handle_next_experiment())
                except (DirectorUnavailableError, DirectorRPCError,
                        CorruptExperimentDataError) as exc:
                    if once or isinstance(exc, DirectorProtocolError):
                        raise
                    logger.error("Experiment handling failed: %s; waiting again", exc)
                    await self._sleep(_FIRST_PERIOD)
                    continue
                if once:
                    break
            group.cancel_scope.cancel()
        return outcomes


async def _terminate(process: Process) -> None:
    """Stop a command and everything it started: SIGTERM to its process group, then SIGKILL
    if it lingers."""
    if process.returncode is None:
        _signal_group(process, signal.SIGTERM)
        with anyio.move_on_after(_TERMINATE_GRACE):
            await process.wait()
    if process.returncode is None:
        _signal_group(process, signal.SIGKILL)
        await process.wait()
    await process.aclose()


def _signal_group(process: Process, signum: signal.Signals) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass

"""The envoy loop: register, keep health checks going, wait for experiments, handle each
once, report failures. Built on the public AsyncShardDirectorClient only.

Semantics follow OpenFL's envoy, with its failure modes fixed: the health loop survives every
transient error and GPU failure (each kind logged once until it recovers), a lost
registration is renewed, an experiment is handled once (the director keeps offering one that
runs or failed: the envoy remembers, across restarts, and waits politely instead of running it
again), and a failure is reported once, with the exit code and the tail of the output.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from shardclient import (
    AsyncShardDirectorClient,
    CorruptExperimentDataError,
    CudaDeviceInfo,
    DirectorProtocolError,
    DirectorRPCError,
    DirectorUnavailableError,
    GpuInfoError,
    GpuMonitor,
    ProgressCallback,
    ShardClientError,
    ShardDescriptor,
    ShardNotFoundError,
    ShardRefusedError,
    StaticShardDescriptor,
)
from shardclient._envoy.experiment import (
    Approver,
    ExperimentResult,
    ExperimentSettings,
    Mode,
    run_experiment,
)
from shardclient._envoy.state import HandledExperiment, HandledExperiments, Outcome
from shardclient._log import OnceLog
from shardclient._text import printable

__all__ = ["Envoy", "ExperimentResult", "ExperimentSettings", "Mode"]

logger = logging.getLogger("shardclient.envoy")

_FIRST_PERIOD = 10.0  # seconds between health checks until the director names its period
_MAX_POLITE_WAIT = 60.0  # longest pause between two asks while a handled one is offered
_DOWNLOAD_ATTEMPTS = 3  # an archive that fails to download this often is reported failed
_REPORT_TIMEOUT = 10.0  # seconds a failure report may take while the envoy is stopping


class Envoy:
    """One shard's participation in federations, driven by an AsyncShardDirectorClient."""

    def __init__(
        self,
        client: AsyncShardDirectorClient,
        *,
        descriptor: ShardDescriptor,
        cuda_devices: Sequence[int] = (),
        workdir: Path,
        settings: ExperimentSettings | None = None,
        handled: HandledExperiments | None = None,
        monitor: GpuMonitor | None = None,
        approve: Approver | None = None,
        progress: Callable[[str], ProgressCallback | None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """``settings`` say what runs per experiment (default: keep the archive only);
        ``handled`` remembers what was handled (default: the state file in ``workdir``);
        ``approve`` asks the data owner when the config wants a review; ``progress(name)``
        makes the progress callback for one download; ``sleep`` waits between health checks
        (tests replace it to step the loop without real time)."""
        self.client = client
        self.descriptor = descriptor
        self.cuda_devices = tuple(cuda_devices)
        self.workdir = workdir
        self.settings = settings or ExperimentSettings(
            mode=Mode.DOWNLOAD_ONLY, workdir=workdir, shard_name=client.shard_name
        )
        self.handled = handled if handled is not None else HandledExperiments(workdir)
        self.monitor = monitor
        self._approve = approve
        self._progress = progress
        self._sleep = sleep
        self.is_experiment_running = False
        self.health_checks_sent = 0
        self.period = _FIRST_PERIOD
        self._health_log = OnceLog(logger, "health check")
        self._gpu_log = OnceLog(logger, "GPU readings")
        self._registered = anyio.Event()  # set (and replaced) at every registration
        self._download_failures: dict[str, int] = {}
        self._explained: set[str] = set()

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
        self._registered.set()
        self._registered = anyio.Event()

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
                self.period = period
                self._health_log.recovered()
            except ShardClientError as exc:
                self._health_log.problem(type(exc).__name__, str(exc))
            await self._sleep(period)

    # -- experiments -------------------------------------------------------------------------

    async def handle_experiment(self, name: str) -> ExperimentResult:
        """Handle experiment ``name`` once: run it, remember the outcome, report a failure.

        Download errors propagate (the experiment is not marked handled, so it is tried again
        when the director offers it again, up to a few times). If the envoy is stopped
        meanwhile, the experiment is recorded and reported as failed before the cancellation
        goes on."""
        self.handled.record(name, Outcome.RUNNING)
        self.is_experiment_running = True
        progress = self._progress(name) if self._progress is not None else None
        try:
            result = await run_experiment(
                self.settings, self.client, name, approve=self._approve, progress=progress
            )
        except (DirectorUnavailableError, DirectorRPCError, CorruptExperimentDataError) as exc:
            failures = self._download_failures.get(name, 0) + 1
            self._download_failures[name] = failures
            if failures < _DOWNLOAD_ATTEMPTS or isinstance(exc, DirectorUnavailableError):
                self.handled.forget(name)
                raise
            result = ExperimentResult(
                name, Outcome.FAILED, 1,
                f"the envoy could not download the experiment's archive "
                f"({failures} attempts): {exc}",
            )  # fmt: skip
        except Exception as exc:  # a local problem (disk full, ...): this experiment failed
            logger.exception("Experiment %s: handling it failed", printable(name))
            result = ExperimentResult(
                name, Outcome.FAILED, 1,
                f"the envoy could not handle the experiment: {type(exc).__name__}: {exc}",
            )  # fmt: skip
        except BaseException:  # cancelled (Ctrl-C, SIGTERM): report, then go on stopping
            with anyio.CancelScope(shield=True):
                description = "the envoy was stopped during the experiment"
                self.handled.record(name, Outcome.FAILED, description)
                await self._report(name, 1, description, timeout=_REPORT_TIMEOUT)
            raise
        finally:
            self.is_experiment_running = False
        self.handled.record(name, result.outcome, result.description)
        if result.failed:
            await self._report(name, result.exit_code or 1, result.description)
        return result

    async def _report(
        self, name: str, code: int, description: str, *, timeout: float | None = None
    ) -> None:
        """Tell the director the experiment failed here; a failed report is logged only."""
        logger.info("Reporting experiment %s as failed (code %d)", printable(name), code)
        try:
            with anyio.fail_after(timeout):
                await self.client.set_experiment_failed(
                    name, error_code=code, error_description=description
                )
        except (ShardClientError, TimeoutError) as exc:
            # openfl 1.6 answers UNKNOWN when the experiment's aggregator never started
            logger.warning("Experiment %s: the failure report failed: %s", printable(name), exc)

    def _explain_wait(self, entry: HandledExperiment) -> None:
        """Say once per experiment why the envoy does not take the one it is offered."""
        if entry.name in self._explained:
            return
        self._explained.add(entry.name)
        name = printable(entry.name)
        what = {
            Outcome.FAILED: "failed here",
            Outcome.REFUSED: "was refused here",
            Outcome.SUCCEEDED: "finished here",
            Outcome.DOWNLOADED: "was downloaded here",
            Outcome.RUNNING: "was interrupted here",
        }[entry.outcome]
        logger.warning(
            "The director still offers experiment %s, which %s; not running it again. "
            "Waiting for another: a director restart, or removing %s's data from the frontend, "
            "frees this envoy (run again on purpose with --rerun %s).",
            name,
            what,
            name,
            name,
        )

    async def _wait_politely(self, delay: float) -> None:
        """Pause before asking again; a new registration (a director restart) ends it early."""
        registered = self._registered
        with anyio.move_on_after(delay):
            await registered.wait()

    async def serve(self, *, once: bool = False) -> list[ExperimentResult]:
        """Register, then handle experiments (one with ``once``) while health checks run.

        An experiment the director offers again after it was handled is not run again; the
        envoy asks again after a pause that grows from the health period to a minute, or
        right after re-registering. Without ``once``, a director that goes away or a broken
        download is logged and the envoy waits again; with ``once`` such errors end the call.
        """
        interrupted = [e for e in self.handled.all() if e.outcome is Outcome.RUNNING]
        for entry in interrupted:
            description = "the envoy stopped (it was restarted) during the experiment"
            self.handled.record(entry.name, Outcome.FAILED, description)
            await self._report(entry.name, 1, description)
        await self.register()
        results: list[ExperimentResult] = []
        async with anyio.create_task_group() as group:
            group.start_soon(self.health_loop)
            delay = 0.0
            while True:
                try:
                    name = await self.client.wait_experiment()
                except (DirectorUnavailableError, DirectorRPCError) as exc:
                    if once or isinstance(exc, DirectorProtocolError):
                        raise
                    logger.error("Waiting for an experiment failed: %s; waiting again", exc)
                    await self._sleep(self.period)
                    continue
                offered = self.handled.get(name)
                if offered is not None:
                    self._explain_wait(offered)
                    delay = min(max(self.period, delay * 2), max(self.period, _MAX_POLITE_WAIT))
                    await self._wait_politely(delay)
                    continue
                delay = 0.0
                logger.info("Experiment %s received", printable(name))
                try:
                    results.append(await self.handle_experiment(name))
                except (
                    DirectorUnavailableError,
                    DirectorRPCError,
                    CorruptExperimentDataError,
                ) as exc:
                    if once or isinstance(exc, DirectorProtocolError):
                        raise
                    logger.error(
                        "Experiment %s: download failed: %s; waiting again", printable(name), exc
                    )
                    await self._sleep(self.period)
                    continue
                if once:
                    break
            group.cancel_scope.cancel()
        return results

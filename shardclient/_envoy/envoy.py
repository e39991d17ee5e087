"""The envoy loop: register, keep health checks going, wait for experiments, handle each
once, report failures. Built on a Director (either generation's; see .directors).

Semantics follow OpenFL's envoy, with its failure modes fixed: the health loop survives every
transient error and GPU failure (each kind logged once until it recovers), a lost
registration is renewed, an experiment is handled once (the director keeps offering one that
runs or failed: the envoy remembers, across restarts, and waits politely instead of running it
again), and a failure is reported once, with the exit code and the tail of the output,
where the protocol has a failure report (OpenFL 1.9's has none: it is logged and kept in the
state file). An envoy started before its director waits for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread
from grpclib.const import Status

from shardclient import (
    CorruptExperimentDataError,
    DirectorProtocolError,
    DirectorRPCError,
    DirectorUnavailableError,
    ProgressCallback,
    ShardClientError,
)
from shardclient._client.retry import is_retryable
from shardclient._envoy.directors import Director
from shardclient._envoy.experiment import (
    Approver,
    ExperimentResult,
    ExperimentSettings,
    Mode,
    run_experiment,
)
from shardclient._envoy.state import HandledExperiment, HandledExperiments, Outcome
from shardclient._generation import Generation
from shardclient._log import OnceLog
from shardclient._text import printable

__all__ = ["Envoy", "ExperimentResult", "ExperimentSettings", "Mode"]

logger = logging.getLogger("shardclient.envoy")

_FIRST_PERIOD = 10.0  # seconds between health checks until the director names its period
_MAX_POLITE_WAIT = 60.0  # longest pause between two asks while a handled one is offered
_DOWNLOAD_ATTEMPTS = 3  # an archive that fails to download this often is reported failed
_REPORT_TIMEOUT = 10.0  # seconds a failure report may take while the envoy is stopping


class Envoy:
    """One envoy's participation in federations, through a Director of either generation."""

    def __init__(
        self,
        director: Director,
        *,
        workdir: Path,
        settings: ExperimentSettings | None = None,
        handled: HandledExperiments | None = None,
        approve: Approver | None = None,
        progress: Callable[[str], ProgressCallback | None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """``settings`` say what runs per experiment (default: keep the archive only);
        ``handled`` remembers what was handled (default: the state file in ``workdir``);
        ``approve`` asks the data owner when the config wants a review; ``progress(name)``
        makes the progress callback for one download; ``sleep`` waits between health checks
        (tests replace it to step the loop without real time)."""
        self.director = director
        self.workdir = workdir
        self.settings = settings or ExperimentSettings(
            mode=Mode.DOWNLOAD_ONLY,
            workdir=workdir,
            shard_name=director.name,
            generation=director.generation,
        )
        self.handled = handled if handled is not None else HandledExperiments(workdir)
        self._approve = approve
        self._progress = progress
        self._sleep = sleep
        self.is_experiment_running = False
        self.health_checks_sent = 0
        self.period = _FIRST_PERIOD
        self._health_log = OnceLog(logger, "health check")
        self._start_log = OnceLog(logger, "registration")
        self._registered = anyio.Event()  # set (and replaced) at every registration
        self._download_failures: dict[str, int] = {}
        self._explained: set[str] = set()
        self._running: anyio.CancelScope | None = None  # the experiment in progress
        self._lost_because = ""
        self._freed: set[str] = set()  # handled under a director that has since restarted

    # -- registration and health ----------------------------------------------------------

    async def register(self) -> None:
        """Register with the director; ShardRefusedError when it refuses, and
        DirectorProtocolError when it speaks the other generation's protocol."""
        try:
            await self.director.register()
        except DirectorRPCError as exc:
            if exc.status is not Status.UNIMPLEMENTED:
                raise
            other = next(g for g in Generation if g is not self.director.generation)
            raise DirectorProtocolError(
                f"the director at {self.director.address} does not speak the "
                f"{self.director.generation.value} director protocol (it answered "
                f"UNIMPLEMENTED); is it an {other.value} director? Then give the envoy an "
                f"{other.value} envoy config (or --api)",
                address=self.director.address,
            ) from exc
        logger.info(
            "%s registered with the %s director at %s",
            self.director.name,
            self.director.generation.value,
            self.director.address,
        )
        self._registered.set()
        self._registered = anyio.Event()

    async def register_when_up(self) -> None:
        """Register, waiting for a director that cannot be reached yet (logged once); any
        other failure (TLS, a refusal, a peer that is not a director) raises at once."""
        pause = 0.0
        while True:
            try:
                await self.register()
            except ShardClientError as exc:
                if not is_retryable(exc):
                    raise
                self._start_log.problem(
                    "unreachable", f"{exc}; waiting for the director", until="until it answers"
                )
                pause = min(max(1.0, pause * 2), self.period)  # 1, 2, 4 ... s, up to a period
                await self._sleep(pause)
                continue
            self._start_log.recovered("the director answered")
            return

    async def health_check(self) -> float:
        """Send one health check, re-registering if the director lost this envoy; return the
        seconds until the next one is due."""
        try:
            period = await self.director.health_check(running=self.is_experiment_running)
        except self.director.lost:
            logger.warning("The director lost %s; registering again", self.director.name)
            self._director_restarted()
            await self.register()
            period = await self.director.health_check(running=self.is_experiment_running)
        self.health_checks_sent += 1
        return float(period)

    def _director_restarted(self) -> None:
        """The director forgot this envoy: it restarted, and with it everything it knew. An
        experiment in progress is let go (its aggregator ran in the old director: nothing
        will end it), and what was handled before no longer stands for the director's
        offers (a restarted director offers only experiments submitted to it)."""
        self._freed.update(entry.name for entry in self.handled.all())
        if self._running is not None and not self._running.cancel_called:
            self._lost_because = (
                f"the director at {self.director.address} restarted during the experiment and "
                "no longer knows it"
            )
            self._running.cancel()

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
        self._freed.discard(name)
        self.is_experiment_running = True
        progress = self._progress(name) if self._progress is not None else None
        try:
            with anyio.CancelScope() as running:
                self._running = running
                result = await run_experiment(
                    self.settings, self.director, name, approve=self._approve, progress=progress
                )
            if running.cancelled_caught:  # let go (see _director_restarted)
                logger.warning(
                    "Experiment %s let go: %s; its processes are stopped, and it is kept in the "
                    "state file as lost (not reported: the director does not know it)",
                    printable(name),
                    self._lost_because,
                )
                result = ExperimentResult(name, Outcome.LOST, None, self._lost_because)
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
            self._running = None
            self.is_experiment_running = False
        self.handled.record(name, result.outcome, result.description)
        if result.reported:
            await self._report(name, result.exit_code or 1, result.description)
        return result

    async def _report(
        self, name: str, code: int, description: str, *, timeout: float | None = None
    ) -> None:
        """Tell the director the experiment failed here, where its protocol can; a failed
        report is logged only."""
        try:
            with anyio.fail_after(timeout):
                reported = await self.director.report_failure(name, code, description)
        except (ShardClientError, TimeoutError) as exc:
            # openfl 1.6 answers UNKNOWN when the experiment's aggregator never started
            logger.warning("Experiment %s: the failure report failed: %s", printable(name), exc)
            return
        if reported:
            logger.info("Reported experiment %s as failed (code %d)", printable(name), code)
        else:
            logger.warning(
                "Experiment %s failed here (code %d); the %s director has no failure report, "
                "so only this log and the state file keep it: %s",
                printable(name),
                code,
                self.director.generation.value,
                description,
            )

    def _stands(self, entry: HandledExperiment) -> bool:
        """Whether having handled ``entry`` keeps the envoy from taking it when offered.

        What was handled under a director that has since restarted does not stand: that
        director offers only what was submitted to it. Nor, with OpenFL 1.9, does an
        experiment the collaborator finished: that director names experiments after their
        flow class, so the next run of the same flow comes under the same name (and it
        offers an experiment again only while its aggregator runs, never after)."""
        if entry.name in self._freed:
            return False
        finished = entry.outcome is Outcome.SUCCEEDED and self.settings.mode is Mode.COLLABORATOR
        return not (finished and self.director.generation is Generation.WORKFLOW)

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
            Outcome.LOST: "was let go here when its director restarted",
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
        await self.register_when_up()
        results: list[ExperimentResult] = []
        async with anyio.create_task_group() as group:
            group.start_soon(self.health_loop)
            delay = 0.0
            while True:
                try:
                    name = await self.director.wait_experiment()
                except (DirectorUnavailableError, DirectorRPCError) as exc:
                    if once or isinstance(exc, DirectorProtocolError):
                        raise
                    logger.error("Waiting for an experiment failed: %s; waiting again", exc)
                    await self._sleep(self.period)
                    continue
                offered = self.handled.get(name)
                if offered is not None and self._stands(offered):
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

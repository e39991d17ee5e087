"""One experiment, from archive to outcome: fetch, unpack, review, environment, run.

What runs depends on the mode: OpenFL's collaborator in a child process (the envoy's main
job; the child of the director's generation), a command of the data owner's (``--exec``), or
nothing (``--download-only``). The result says how it ended and what to tell the director;
reporting is the envoy's job.
Everything the director sent (the name, the archive, the plan) is treated as untrusted.
"""

from __future__ import annotations

import getpass
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import anyio
import anyio.to_thread

from shardclient import DownloadedExperiment, ProgressCallback
from shardclient._envoy import venv
from shardclient._envoy.directors import Director
from shardclient._envoy.process import ProcessResult, run_in_group
from shardclient._envoy.review import NO_TERMINAL, summarize_workspace
from shardclient._envoy.state import Outcome
from shardclient._envoy.unpack import ArchiveRefusedError, UnpackLimits, unpack_archive
from shardclient._generation import Generation
from shardclient._text import printable, safe_stem, unencodable

__all__ = [
    "Approver",
    "ExperimentResult",
    "ExperimentSettings",
    "Mode",
    "check_experiment_name",
    "run_experiment",
]

logger = logging.getLogger("shardclient.envoy")

Approver = Callable[[str], Awaitable["bool | None"]]
"""Shows a review text and asks; True approves, False declines, None: nobody to ask."""

EXPERIMENTS_FOLDER = "experiments"
MAX_NAME_LENGTH = 256
REFUSED_CODE = 1  # error_code reported when nothing ran (as OpenFL's envoy reports)


class Mode(Enum):
    COLLABORATOR = "collaborator"
    COMMAND = "command"
    DOWNLOAD_ONLY = "download-only"


@dataclass(frozen=True)
class ExperimentSettings:
    """How this envoy handles each experiment (built by the CLI from flags and config)."""

    mode: Mode
    workdir: Path
    shard_name: str
    """This envoy's name at the director (the shard name, or the 1.9 envoy name)."""
    generation: Generation = Generation.INTERACTIVE
    command: Sequence[str] = ()
    envoy_config: Path | None = None
    cuda_devices: tuple[int, ...] = ()
    review: bool = False
    install_requirements: bool = False
    keep_environment: bool = False
    keep_workspace: bool = False
    root_certificate: Path | None = None
    private_key: Path | None = None
    certificate: Path | None = None
    unpack_limits: UnpackLimits = field(default_factory=UnpackLimits)
    terminate_grace: float = 10.0
    start_folder: Path | None = None
    """Where the envoy was started: first on the 1.9 collaborator's sys.path, as under ``fx``
    (its private attributes' modules are found there)."""
    collaborator_command: Sequence[str] | None = None
    """The collaborator program, before its arguments (None: the generation's child); the
    per-experiment environment's python replaces the first item when there is one."""

    def collaborator(self) -> list[str]:
        """The collaborator's command line, arguments included."""
        command = self.collaborator_command or (sys.executable, "-m", _CHILDREN[self.generation])
        return [*command, *_collaborator_arguments(self)]

    def workspace(self, name: str) -> Path:
        """Where experiment ``name`` is unpacked and its collaborator runs. For 1.9, as under
        ``fx``: ``<envoy>_<experiment>`` in the folder the envoy runs in (--workdir), so that
        relative paths in the envoy config resolve as they do for OpenFL's envoy."""
        if self.generation is Generation.WORKFLOW:
            return self.workdir / f"{safe_stem(self.shard_name)}_{safe_stem(name)}"
        return self.workdir / EXPERIMENTS_FOLDER / safe_stem(name) / "workspace"


_CHILDREN = {
    Generation.INTERACTIVE: "shardclient._envoy.collaborator.interactive",
    Generation.WORKFLOW: "shardclient._envoy.collaborator.workflow",
}


@dataclass(frozen=True)
class ExperimentResult:
    """How an experiment ended here; ``description`` is what the director is told."""

    name: str
    outcome: Outcome
    exit_code: int | None = None
    description: str = ""
    archive: DownloadedExperiment | None = None
    log: Path | None = None

    @property
    def failed(self) -> bool:
        """It did not end well here (a lost experiment included)."""
        return self.outcome in (Outcome.FAILED, Outcome.REFUSED, Outcome.LOST)

    @property
    def reported(self) -> bool:
        """The director is to be told it failed (not when it forgot the experiment)."""
        return self.outcome in (Outcome.FAILED, Outcome.REFUSED)


def check_experiment_name(name: str) -> str | None:
    """Why a name from the director is refused (None: it is fine). Names become file names
    and environment values: no NUL or control characters, separators, or absurd length."""
    if not name:
        return "an empty experiment name"
    if len(name) > MAX_NAME_LENGTH:
        return f"an experiment name of {len(name)} characters (at most {MAX_NAME_LENGTH})"
    if any(not ch.isprintable() for ch in name):
        return "an experiment name with control characters"
    if "/" in name or "\\" in name:
        return "an experiment name with a path separator"
    if name in (".", ".."):
        return "an experiment name that is a relative path"
    if unencodable(name) is not None:
        return "an experiment name that is not valid Unicode"
    return None


def _refused(
    name: str, reason: str, *, archive: DownloadedExperiment | None = None,
    log: Path | None = None,
) -> ExperimentResult:  # fmt: skip
    logger.warning("Experiment %s refused: %s", printable(name), reason)
    return ExperimentResult(name, Outcome.REFUSED, REFUSED_CODE, reason, archive, log)


def _failed(
    name: str, result: ProcessResult, what: str, log: Path,
    archive: DownloadedExperiment | None = None,
) -> ExperimentResult:  # fmt: skip
    """A program that exited non-zero (killed by a signal: reported as code 1)."""
    code = result.exit_code
    logger.warning(
        "Experiment %s: %s exited with %d; output in %s", printable(name), what, code, log
    )
    description = f"{what} exited with {code}. Last output:\n{result.tail}"
    return ExperimentResult(
        name, Outcome.FAILED, code if code > 0 else 1, description, archive, log
    )


async def run_experiment(
    settings: ExperimentSettings,
    director: Director,
    name: str,
    *,
    approve: Approver | None = None,
    progress: ProgressCallback | None = None,
) -> ExperimentResult:
    """Handle experiment ``name`` from download to outcome. Download errors propagate
    (ShardClientError); everything after the download ends in the result."""
    problem = check_experiment_name(name)
    if problem is not None:
        return _refused(name, f"the envoy refuses {problem}")
    if settings.mode is not Mode.COLLABORATOR:
        archive = await director.download_experiment(name, settings.workdir, progress=progress)
        _log_download(name, archive)
        if settings.mode is Mode.DOWNLOAD_ONLY:
            return ExperimentResult(name, Outcome.DOWNLOADED, archive=archive)
        return await _run_command(settings, name, archive, approve)
    return await _run_collaborator(settings, director, name, approve, progress)


def _log_download(name: str, archive: DownloadedExperiment) -> None:
    logger.info(
        "Experiment %s downloaded: %s (%d bytes, sha256 %s)",
        printable(name),
        archive.path,
        archive.size,
        archive.sha256,
    )


def _child_env(name: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env["SHARDCLIENT_EXPERIMENT"] = name
    if not any(env.get(key) for key in ("USER", "USERNAME", "LOGNAME")):
        # metaflow (under OpenFL 1.9's collaborator) refuses to run without a user name,
        # which services and containers often lack
        env["USER"] = _user_name()
    return env


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry for this uid (a container)
        return f"uid{os.getuid()}"


async def _review(
    settings: ExperimentSettings, name: str, text: str, approve: Approver | None
) -> str | None:
    """None when approved (or no review asked for), otherwise the refusal description."""
    if not settings.review:
        return None
    answer = await approve(text) if approve is not None else None
    if answer:
        logger.info("Experiment %s approved by the data owner", printable(name))
        return None
    who = f"the data owner of shard {settings.shard_name!r}"
    if answer is None:
        return (
            f"Experiment {name!r} was not approved by {who}: review_experiment is on and the "
            f"envoy has {NO_TERMINAL}. Run the envoy on a terminal to review experiments, or "
            "set params.review_experiment to false in its envoy config."
        )
    return f"Experiment {name!r} was not approved by {who} (declined at review)."


async def _run_command(
    settings: ExperimentSettings, name: str, archive: DownloadedExperiment,
    approve: Approver | None,
) -> ExperimentResult:  # fmt: skip
    command = list(settings.command)
    question = (
        f"Experiment {printable(name)} for shard {printable(settings.shard_name)}: archive "
        f"{archive.path} ({archive.size} bytes, sha256 {archive.sha256}).\n"
        f"Run {printable(shlex.join(command))} on it?"
    )
    refusal = await _review(settings, name, question, approve)
    if refusal is not None:
        return _refused(name, refusal, archive=archive)
    folder = settings.workdir / EXPERIMENTS_FOLDER / safe_stem(name)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "output.log"
    env = _child_env(name, SHARDCLIENT_ARCHIVE=str(archive.path))
    logger.info("Running %s (output in %s)", shlex.join(command), log)
    try:
        result = await run_in_group(
            command, cwd=settings.workdir, env=env, log_path=log, label=name,
            grace=settings.terminate_grace,
        )  # fmt: skip
    except OSError as exc:
        message = f"cannot run {command[0]!r}: {exc.strerror or exc}"
        logger.error("Experiment %s: %s", printable(name), message)
        return ExperimentResult(name, Outcome.FAILED, 127, message, archive=archive, log=log)
    if result.exit_code == 0:
        return ExperimentResult(name, Outcome.SUCCEEDED, 0, archive=archive, log=log)
    return _failed(name, result, "the command", log, archive)


async def _run_collaborator(
    settings: ExperimentSettings, director: Director, name: str,
    approve: Approver | None, progress: ProgressCallback | None,
) -> ExperimentResult:  # fmt: skip
    folder = settings.workdir / EXPERIMENTS_FOLDER / safe_stem(name)
    workspace = settings.workspace(name)
    for earlier in (folder, workspace):  # an earlier attempt (--rerun): start afresh
        if earlier.exists():
            await anyio.to_thread.run_sync(shutil.rmtree, earlier)
    folder.mkdir(parents=True)
    log = folder / "output.log"
    environment = folder / "env"
    archive = await director.download_experiment(name, folder, progress=progress)
    _log_download(name, archive)
    try:
        try:
            # off the loop (up to gigabytes): health checks and pings go on meanwhile
            await anyio.to_thread.run_sync(
                unpack_archive, archive.path, workspace, settings.unpack_limits
            )
        except ArchiveRefusedError as exc:
            return _refused(name, f"the envoy refuses the experiment's archive: {exc}", log=log)
        finally:
            archive.path.unlink(missing_ok=True)
        summary = await anyio.to_thread.run_sync(summarize_workspace, workspace, name)
        text = summary.render(
            shard_name=settings.shard_name, install_requirements=settings.install_requirements
        )
        refusal = await _review(settings, name, text + "\nRun it on this shard?", approve)
        if refusal is not None:
            return _refused(name, refusal, log=log)

        command = settings.collaborator()
        python = command[0]
        env = _child_env(name)
        requirements = workspace / "requirements.txt"
        if settings.install_requirements and summary.requirements:
            logger.info("Installing the requirements of %s into %s", printable(name), environment)
            made = await venv.create_environment(
                environment, log_path=log, label=f"{name} venv", env=env
            )
            if made.exit_code != 0:
                return _failed(name, made, "creating its environment", log)
            installed = await venv.install_requirements(
                environment, requirements, cwd=workspace, log_path=log,
                label=f"{name} pip", env=env,
            )  # fmt: skip
            if installed.exit_code != 0:
                return _failed(name, installed, "pip install -r requirements.txt", log)
            python = str(venv.environment_python(environment))

        argv = [python, *command[1:]]
        logger.info("Starting the collaborator for %s (output in %s)", printable(name), log)
        try:
            result = await run_in_group(
                argv, cwd=workspace, env=env, log_path=log, label=name,
                grace=settings.terminate_grace,
            )  # fmt: skip
        except OSError as exc:
            message = f"cannot start the collaborator ({python}): {exc.strerror or exc}"
            logger.error("Experiment %s: %s", printable(name), message)
            return ExperimentResult(name, Outcome.FAILED, 127, message, log=log)
        if result.exit_code != 0:
            return _failed(name, result, "the collaborator", log)
        logger.info("Experiment %s: the collaborator finished", printable(name))
        return ExperimentResult(name, Outcome.SUCCEEDED, 0, log=log)
    finally:
        with anyio.CancelScope(shield=True):  # cleaned up even when the envoy is stopping
            if not settings.keep_environment:
                await anyio.to_thread.run_sync(venv.remove_environment, environment)
            if not settings.keep_workspace:
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(workspace, ignore_errors=True))


def _collaborator_arguments(settings: ExperimentSettings) -> list[str]:
    assert settings.envoy_config is not None, "the collaborator mode needs the envoy config"
    config = str(settings.envoy_config.absolute())
    if settings.generation is Generation.WORKFLOW:
        start = settings.start_folder or settings.envoy_config.parent
        arguments = ["--envoy-name", settings.shard_name, "--envoy-config", config]
        arguments += ["--start-folder", str(start.absolute())]
        if settings.root_certificate is not None:  # the envoy's TLS files: TLS is on
            arguments.append("--tls")
    else:
        arguments = [
            "--shard-name", settings.shard_name,
            "--envoy-config", config,
            "--cuda-devices", ",".join(str(index) for index in settings.cuda_devices),
        ]  # fmt: skip
    for flag, path in (
        ("--root-certificate", settings.root_certificate),
        ("--private-key", settings.private_key),
        ("--certificate", settings.certificate),
    ):
        if path is not None:
            arguments += [flag, str(path.absolute())]
    return arguments

"""Running the real OpenFL director for the interop tests.

OpenFL pins its own grpcio/protobuf, so it lives in a virtual environment of its own,
created once under ``<repo>/.interop/venv-<version>`` and reused while its ready-marker
matches the requirements. The version is 1.6 unless SHARDCLIENT_OPENFL_VERSION names
another (1.5.1 to 1.7.1 share the director protocol). Where the version allows it (1.6
and later: openfl 1.5.1 pins an older click), shardclient itself is installed there too,
editable and with its ``openfl`` extra, so that envoys of ours can run OpenFL's
collaborator. Beside it, ``<repo>/.interop/venv-1.9`` holds OpenFL 1.9 (the Workflow API's
director) through shardclient's ``workflow`` extra (WORKFLOW_VENV). Installing may fail as
RegistryUnreachable (the only failure the fixtures turn into a skip) when pip could not
reach the package registry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".interop"
OPENFL_VERSION = os.environ.get("SHARDCLIENT_OPENFL_VERSION", "1.6")
VENV_DIR = CACHE_DIR / f"venv-{OPENFL_VERSION}"
READY_MARKER = ".shardclient-interop-ready"
SUBMIT_SCRIPT = Path(__file__).resolve().with_name("submit_experiment.py")
# Versions whose requirements admit shardclient's (openfl 1.5.1 pins Click==8.0.1).
WITH_SHARDCLIENT = OPENFL_VERSION not in ("1.5", "1.5.1")

# numpy 2.1 removed np.reshape(newshape=...), which the 1.6 director's SetNewExperiment uses.
OPENFL_REQUIREMENTS = (f"openfl=={OPENFL_VERSION}", "numpy<2.1")
SHARDCLIENT_REQUIREMENT = ("-e", f"{REPO_ROOT}[openfl]")
PIP_INSTALL_TIMEOUT_S = 480.0  # under the tests' 600 s pytest timeout
DIRECTOR_START_TIMEOUT_S = 60.0
DIRECTOR_STOP_TIMEOUT_S = 15.0
SUBMIT_TIMEOUT_S = 120.0

HOST = "127.0.0.1"
# The director compares shapes as lists of strings: quoted in its config.
SAMPLE_SHAPE = ("28", "28")
TARGET_SHAPE = ("1",)
HEALTH_CHECK_PERIOD_S = 5
TLS_ENVOY_NAME = "envoy-tls"

# What pip prints when it could not talk to the registry at all (urllib3 / socket errors).
NETWORK_FAILURE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|ConnectTimeoutError"
    r"|ReadTimeoutError|Max retries exceeded|connection broken by|ProxyError"
    r"|Temporary failure in name resolution|Name or service not known"
    r"|Network is unreachable|No route to host"
)


class RegistryUnreachable(Exception):
    """pip could not reach the package registry (the only reason to skip)."""


@dataclass(frozen=True)
class VenvSpec:
    """What one interop venv holds: openfl ``openfl_version`` (and numpy below
    ``numpy_below`` when set), installed with pip from ``requirements``."""

    openfl_version: str
    requirements: tuple[str, ...]
    numpy_below: tuple[int, int] | None = None


@dataclass(frozen=True)
class OpenflVenv:
    """A virtual environment holding openfl (1.6, or another version: see VenvSpec)."""

    root: Path
    python: Path
    fx: Path


@dataclass(frozen=True)
class EnvoyCerts:
    """Client-side TLS files for a TLS director: CA, and the envoy's key and certificate."""

    root_certificate: Path
    private_key: Path
    certificate: Path
    common_name: str


@dataclass(frozen=True)
class RunningDirector:
    """A running ``fx director start``; ``certs`` is None when it runs without TLS."""

    host: str
    port: int
    python: Path
    workdir: Path
    log: Path
    certs: EnvoyCerts | None
    health_check_period: int = HEALTH_CHECK_PERIOD_S
    sample_shape: tuple[str, ...] = SAMPLE_SHAPE
    target_shape: tuple[str, ...] = TARGET_SHAPE

    @property
    def tls(self) -> bool:
        return self.certs is not None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"


# --- the openfl venv -------------------------------------------------------------------


def _installed_versions(python: Path) -> tuple[str, str] | None:
    """(openfl, numpy) versions installed for ``python``; None when either is missing."""
    probe = "import importlib.metadata as m; print(m.version('openfl')); print(m.version('numpy'))"
    try:
        result = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60
        )
    except OSError:
        return None
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2:
        return None
    return lines[0], lines[1]


def _versions_fit(versions: tuple[str, str] | None, spec: VenvSpec) -> bool:
    if versions is None:
        return False
    openfl_version, numpy_version = versions
    numpy_minor = tuple(int(part) for part in re.findall(r"\d+", numpy_version)[:2])
    if openfl_version != spec.openfl_version:
        return False
    return spec.numpy_below is None or numpy_minor < spec.numpy_below


def _requirements() -> tuple[str, ...]:
    return (*OPENFL_REQUIREMENTS, *(SHARDCLIENT_REQUIREMENT if WITH_SHARDCLIENT else ()))


DEFAULT_SPEC = VenvSpec(OPENFL_VERSION, _requirements(), numpy_below=(2, 1))
# OpenFL 1.9 (Workflow API) with the extras its collaborator imports, through shardclient's
# ``workflow`` extra; numpy is unpinned there (nothing under openfl.experimental calls the
# np.reshape(newshape=) that numpy 2.1 removed).
WORKFLOW_SPEC = VenvSpec("1.9", ("-e", f"{REPO_ROOT}[workflow]"))
WORKFLOW_VENV = CACHE_DIR / "venv-1.9"


def _marker_text(spec: VenvSpec = DEFAULT_SPEC) -> str:
    # shardclient's own requirements may change: they are part of what makes the venv fit
    project = hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return "\n".join((*spec.requirements, project, sys.version.split()[0])) + "\n"


def _venv_ready(venv: OpenflVenv, spec: VenvSpec = DEFAULT_SPEC) -> bool:
    marker = venv.root / READY_MARKER
    if not (marker.is_file() and venv.python.exists() and venv.fx.exists()):
        return False
    return marker.read_text() == _marker_text(spec) and _versions_fit(
        _installed_versions(venv.python), spec
    )


def _install(venv: OpenflVenv, log: Path, spec: VenvSpec = DEFAULT_SPEC) -> None:
    shutil.rmtree(venv.root, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv.root)], check=True, timeout=300)
    command = [
        str(venv.python), "-m", "pip", "install", "--retries", "2", "--timeout", "60",
        *spec.requirements,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=PIP_INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"pip install {' '.join(spec.requirements)} ran over {PIP_INSTALL_TIMEOUT_S} s"
        ) from exc
    log.write_text(result.stdout)
    if result.returncode != 0:
        network = NETWORK_FAILURE.search(result.stdout)
        if network is not None:
            raise RegistryUnreachable(
                f"package registry unreachable while installing openfl {spec.openfl_version} "
                f"(pip: ...{network.group(0)}...; full output in {log})"
            )
        raise RuntimeError(
            f"pip install {' '.join(spec.requirements)} failed (exit {result.returncode}); "
            f"output in {log}:\n{result.stdout[-4000:]}"
        )
    versions = _installed_versions(venv.python)
    if not _versions_fit(versions, spec):
        raise RuntimeError(f"openfl venv holds (openfl, numpy) = {versions}, not what was asked")
    (venv.root / READY_MARKER).write_text(_marker_text(spec))


def ensure_openfl_venv(root: Path = VENV_DIR, spec: VenvSpec = DEFAULT_SPEC) -> OpenflVenv:
    """Return the openfl venv at ``root`` holding ``spec`` (by default the version
    SHARDCLIENT_OPENFL_VERSION names, 1.6), (re)creating it unless its ready-marker fits."""
    venv = OpenflVenv(root=root, python=root / "bin" / "python", fx=root / "bin" / "fx")
    root.parent.mkdir(parents=True, exist_ok=True)
    # Several test runs may share one working tree: one installs, the others wait.
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _venv_ready(venv, spec):
            _install(venv, root.parent / f"{root.name}-pip.log", spec)
    return venv


def ensure_workflow_venv() -> OpenflVenv:
    """The OpenFL 1.9 venv (``.interop/venv-1.9``, shardclient's ``workflow`` extra)."""
    return ensure_openfl_venv(WORKFLOW_VENV, WORKFLOW_SPEC)


# --- the director process --------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _write_config(
    workdir: Path, port: int, sample_shape: tuple[str, ...], target_shape: tuple[str, ...],
    health_check_period: int,
) -> Path:  # fmt: skip
    config = workdir / "director_config.yaml"
    config.write_text(
        "settings:\n"
        f"  listen_host: {HOST}\n"
        f"  listen_port: {port}\n"
        f"  sample_shape: [{', '.join(repr(d) for d in sample_shape)}]\n"
        f"  target_shape: [{', '.join(repr(d) for d in target_shape)}]\n"
        f"  envoy_health_check_period: {health_check_period}\n"
        "  install_requirements: false\n"
    )
    return config


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once something accepts on ``port``; fail with the log if the director exits."""
    deadline = time.monotonic() + DIRECTOR_START_TIMEOUT_S
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the director did not listen on {HOST}:{port} within "
                f"{DIRECTOR_START_TIMEOUT_S} s; its log:\n{log.read_text(errors='replace')}"
            )
        try:
            # Doubles as the pause between two connection attempts.
            code = process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(
            f"the director exited with {code} before listening; its log:\n"
            f"{log.read_text(errors='replace')}"
        )


def stop_process_group(
    process: subprocess.Popen[bytes], timeout: float = DIRECTOR_STOP_TIMEOUT_S
) -> None:
    """Terminate a process's group and reap it, whatever state it is in."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class DirectorProcess:
    """``fx director start`` in ``workdir`` on a fixed port: start, stop, start again."""

    def __init__(
        self, venv: OpenflVenv, workdir: Path, certs: EnvoyCerts | None = None, *,
        server_key: Path | None = None, server_cert: Path | None = None,
        sample_shape: tuple[str, ...] = SAMPLE_SHAPE, target_shape: tuple[str, ...] = TARGET_SHAPE,
        health_check_period: int = HEALTH_CHECK_PERIOD_S,
    ) -> None:  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)
        self.venv = venv
        self.port = free_port()
        self.running = RunningDirector(
            host=HOST, port=self.port, python=venv.python, workdir=workdir,
            log=workdir / "director.log", certs=certs, health_check_period=health_check_period,
            sample_shape=sample_shape, target_shape=target_shape,
        )  # fmt: skip
        config = _write_config(workdir, self.port, sample_shape, target_shape, health_check_period)
        self._command = [str(venv.fx), "director", "start", "-c", config.name]
        if certs is None:
            self._command.insert(3, "--disable-tls")
        else:
            assert server_key is not None and server_cert is not None
            self._command += [
                "-rc", str(certs.root_certificate), "-pk", str(server_key), "-oc", str(server_cert),
            ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RunningDirector:
        assert self._process is None, "already running"
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
        with open(self.running.log, "ab") as log_file:
            # The director refuses a config path outside its working directory: run it there.
            process = subprocess.Popen(
                self._command,
                cwd=self.running.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._process = process
        try:
            _wait_for_port(process, self.port, self.running.log)
        except BaseException:
            self.stop()
            raise
        return self.running

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process)

    def pause(self) -> None:
        """Freeze the director's processes (SIGSTOP): it answers nothing and forgets
        nothing, as in a network outage."""
        assert self._process is not None, "not running"
        os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused director go on (SIGCONT)."""
        assert self._process is not None, "not running"
        os.killpg(self._process.pid, signal.SIGCONT)


def run_director(
    venv: OpenflVenv, workdir: Path, certs: EnvoyCerts | None = None, *,
    server_key: Path | None = None, server_cert: Path | None = None,
) -> Iterator[RunningDirector]:  # fmt: skip
    """Start ``fx director start`` in ``workdir``, yield it once it listens, then stop it."""
    director = DirectorProcess(venv, workdir, certs, server_key=server_key, server_cert=server_cert)
    try:
        yield director.start()
    finally:
        director.stop()


def submit_experiment(
    director: RunningDirector, *, name: str, collaborators: list[str], archive: Path
) -> None:
    """Submit an experiment through openfl's own frontend (DirectorClient), in its venv.

    With TLS the frontend presents the envoy's client certificate: the director accepts
    SetNewExperiment from any certificate its CA signed (the CN becomes the owner).
    """
    command = [
        str(director.python), str(SUBMIT_SCRIPT), "--host", director.host,
        "--port", str(director.port), "--name", name, "--archive", str(archive),
    ]  # fmt: skip
    for collaborator in collaborators:
        command += ["--collaborator", collaborator]
    if director.certs is not None:
        command += [
            "--root-certificate", str(director.certs.root_certificate),
            "--private-key", str(director.certs.private_key),
            "--certificate", str(director.certs.certificate),
        ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S, cwd=director.workdir
    )
    if result.returncode != 0:
        raise AssertionError(
            f"submitting {name!r} through openfl's DirectorClient failed "
            f"(exit {result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}\n"
            f"director log:\n{director.log_text()[-4000:]}"
        )

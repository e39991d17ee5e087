"""A whole OpenFL 1.9 (Workflow API) federation on loopback for the workflow tests.

A real 1.9 director (with its aggregator) in the 1.9 venv, started from Python as ``fx
director start`` builds it (scripts/workflow/director.py); envoys (``shardclient run``, or
OpenFL 1.9's own Envoy on shardclient's EnvoyDirectorClient: scripts/workflow/openfl_envoy.py)
whose private attributes are numpy regression shards (scripts/workflow/shard_data.py); and a
frontend that writes a numpy FedAvg notebook and runs it headless on FederatedRuntime
(scripts/workflow/frontend.py). Every process runs in a process group of its own, logs to a
file in the test's folder, and is stopped and reaped whatever the outcome.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.certs import Pki
from tests.interop.federation import Envoy, diagnostics, one_line, wait_for
from tests.interop.openfl_director import (
    OpenflVenv,
    _wait_for_port,
    free_port,
    stop_process_group,
)

SCRIPTS = Path(__file__).resolve().with_name("scripts") / "workflow"
# What the envoys dial and the frontend names: openfl 1.9's envoy config check (is_fqdn)
# takes it, and the server certificate of make_pki covers it.
DIRECTOR_HOST = "localhost"
HEALTH_CHECK_PERIOD_S = 2
ROUNDS = 2
FRONTEND_TIMEOUT_S = 180.0  # one flow takes about 40 s (OpenFL's 10 s polls)
ENVOY_STOP_TIMEOUT_S = 30.0
SHARD_SIZE = 200


def _environment() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    if not env.get("USER"):
        env["USER"] = "shardclient-tests"  # metaflow refuses to run without a user name
    return env


class WorkflowDirector:
    """OpenFL 1.9's director in ``workdir`` on a fixed port: start, stop, start again."""

    def __init__(self, venv: OpenflVenv, workdir: Path, pki: Pki | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "director.log"
        (workdir / "director_config.yaml").write_text(
            "settings:\n"
            f"  listen_host: {DIRECTOR_HOST}\n"
            f"  listen_port: {self.port}\n"
            f"  envoy_health_check_period: {HEALTH_CHECK_PERIOD_S}\n"
            # else the director pip-installs each experiment's requirements into its venv
            "  install_requirements: false\n"
        )
        self._command = [
            str(venv.python), str(SCRIPTS / "director.py"), "-c", "director_config.yaml",
        ]  # fmt: skip
        if pki is not None:
            self._command += [
                "--tls", "-rc", str(pki.ca_cert), "-pk", str(pki.server.key),
                "-oc", str(pki.server.cert),
            ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "the director is not running"
        return self._process.pid

    def start(self) -> None:
        assert self._process is None, "already running"
        with open(self.log, "ab") as log_file:
            process = subprocess.Popen(
                self._command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, env=_environment(), start_new_session=True,
            )  # fmt: skip
        self._process = process
        try:
            _wait_for_port(process, self.port, self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the director's process group (its aggregator included) and reap it."""
        process, self._process = self._process, None
        if process is not None:
            stop_process_group(process)

    def log_text(self) -> str:
        """The log of every run so far, as one line (see one_line)."""
        return one_line(self.log.read_text(errors="replace")) if self.log.exists() else ""


@dataclass
class WorkflowFederation:
    """A 1.9 director and the envoys started for one test."""

    venv: OpenflVenv
    folder: Path
    director: WorkflowDirector
    pki: Pki | None = None
    envoys: list[Envoy] = field(default_factory=list)
    flows: int = 0

    # --- envoys ---------------------------------------------------------------------------

    def _envoy_folder(self, name: str, seed: int, *, callable_func: bool) -> Path:
        """The envoy's folder: its 1.9 envoy config and the module of its private
        attributes, through ``callable_func`` or a module-level dict (``private_attributes``)."""
        folder = self.folder / name
        folder.mkdir()
        shard = (SCRIPTS / "shard_data.py").read_text()
        lines = [
            "settings:",
            f"  director_host: {DIRECTOR_HOST}",
            f"  director_port: {self.director.port}",
            "params:",
            "  install_requirements: false",
            f"{name}:",
        ]
        if callable_func:
            lines += [
                "  callable_func:",
                "    template: shard_data.make_private_attributes",
                "    settings:",
                f"      shard_name: {name}",
                f"      seed: {seed}",
                f"      n: {SHARD_SIZE}",
            ]
        else:
            lines.append("  private_attributes: shard_data.private_attributes")
            shard += (
                "\n\nprivate_attributes = make_private_attributes("
                f"{name!r}, seed={seed}, n={SHARD_SIZE})\n"
            )
        (folder / "shard_data.py").write_text(shard)
        (folder / "envoy_config.yaml").write_text("\n".join(lines) + "\n")
        return folder

    def _tls_flags(self, name: str) -> list[str]:
        if self.pki is None:
            return []
        pair = self.pki.clients[name]
        return ["-rc", str(self.pki.ca_cert), "-pk", str(pair.key), "-oc", str(pair.cert)]

    def _start(self, name: str, folder: Path, command: list[str]) -> Envoy:
        log = folder / "envoy.log"
        with open(log, "ab") as log_file:
            process = subprocess.Popen(
                command, cwd=folder, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, env=_environment(), start_new_session=True,
            )  # fmt: skip
        envoy = Envoy(name, folder, log, process)
        self.envoys.append(envoy)
        return envoy

    def shardclient_envoy(self, name: str, seed: int, *, callable_func: bool = False) -> Envoy:
        """``shardclient run`` in the envoy's folder, the director's address from the config."""
        folder = self._envoy_folder(name, seed, callable_func=callable_func)
        tls = self._tls_flags(name) or ["--disable-tls"]
        command = [
            str(self.venv.root / "bin" / "shardclient"), "run", "-n", name,
            "-c", "envoy_config.yaml", *tls,
        ]  # fmt: skip
        return self._start(name, folder, command)

    def openfl_envoy(
        self, name: str, seed: int, *, callable_func: bool = False, retry_total: float = 60.0
    ) -> Envoy:
        """OpenFL 1.9's own Envoy, on shardclient's EnvoyDirectorClient (retrying a call for
        ``retry_total`` seconds at most)."""
        folder = self._envoy_folder(name, seed, callable_func=callable_func)
        tls = ["--tls", *self._tls_flags(name)] if self.pki is not None else []
        command = [
            str(self.venv.python), str(SCRIPTS / "openfl_envoy.py"), "-n", name,
            "-c", "envoy_config.yaml", "--retry-total", str(retry_total), *tls,
        ]  # fmt: skip
        return self._start(name, folder, command)

    def connections(self, name: str) -> int:
        """How often the director (over all its runs) logged envoy ``name`` connecting."""
        return self.director.log_text().count(f"Envoy {name} is connected")

    # --- the frontend ---------------------------------------------------------------------

    def run_flow(self, collaborators: Sequence[str]) -> dict[str, object]:
        """Run the FedAvg notebook on ``collaborators`` in a fresh folder, headless; return
        the frontend's result (``finished``, per-round ``history``, ``aggregator_pid``)."""
        self.flows += 1
        folder = self.folder / f"frontend-{self.flows}"
        folder.mkdir()
        command = [
            str(self.venv.python), str(SCRIPTS / "frontend.py"), "--host", DIRECTOR_HOST,
            "--port", str(self.director.port), "--agg-port", str(free_port()),
            "--rounds", str(ROUNDS),
        ]  # fmt: skip
        for name in collaborators:
            command += ["--collaborator", name]
        if self.pki is not None:
            pair = self.pki.clients["frontend"]
            command += [
                "--tls", "-rc", str(self.pki.ca_cert), "-pk", str(pair.key), "-oc", str(pair.cert),
            ]  # fmt: skip
        log = folder / "frontend.log"
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                command, cwd=folder, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, env=_environment(), start_new_session=True,
            )  # fmt: skip
        try:
            # GetFlowState waits without a deadline: a director whose experiment loop died
            # would keep the frontend waiting forever.
            code: int | None = process.wait(timeout=FRONTEND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            stop_process_group(process, 5.0)
        output = log.read_text(errors="replace")
        found = re.search(r"^RESULT (.*)$", output, re.MULTILINE)
        if code != 0 or found is None:
            ended = "ran over its timeout" if code is None else f"exited with {code}"
            raise AssertionError(f"the frontend {ended}:\n{output[-4000:]}\n{self.diagnostics()}")
        loaded: dict[str, object] = json.loads(found.group(1))
        return loaded

    # --- waiting and diagnostics ----------------------------------------------------------

    def diagnostics(self) -> str:
        return diagnostics(self.director.log_text(), self.envoys)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
        """Poll ``condition`` (log contents, files) until it holds; fail with the logs."""
        wait_for(condition, what, timeout, self.envoys, self.diagnostics)

    def wait_connected(self, names: Sequence[str], before: dict[str, int] | None = None) -> None:
        """Wait until the director logged each envoy connecting (once more than ``before``)."""
        for name in names:
            count = (before or {}).get(name, 0)
            self.wait_for(
                lambda name=name, count=count: self.connections(name) > count,  # type: ignore[misc]  # defaults bind the loop variables
                f"envoy {name} to connect to the director",
            )


@contextmanager
def workflow_federation(
    venv: OpenflVenv, folder: Path, *, pki: Pki | None = None
) -> Iterator[WorkflowFederation]:
    """A running 1.9 director (mutual TLS when ``pki`` is given: the server certificate, the
    envoys' by their names and ``frontend``'s); stops it and every envoy at the end."""
    director = WorkflowDirector(venv, folder / "director", pki)
    fed = WorkflowFederation(venv=venv, folder=folder, director=director, pki=pki)
    director.start()
    try:
        yield fed
    finally:
        for envoy in fed.envoys:
            envoy.stop()
        director.stop()

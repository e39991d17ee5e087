"""A whole OpenFL federation on loopback for the federation tests.

A real OpenFL director (with its aggregator) in the openfl venv, envoys (``shardclient run``,
or OpenFL's own Envoy with our client swapped in) on synthetic shards, and a frontend using
OpenFL's interactive API (scripts/frontend.py) that trains a numpy logistic regression. Every
process runs in a process group of its own, logs to a file in the test's folder, and is
stopped and reaped whatever the outcome.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.certs import Pki
from tests.interop.openfl_director import (
    HOST,
    DirectorProcess,
    EnvoyCerts,
    OpenflVenv,
    RunningDirector,
    free_port,
    stop_process_group,
)

SCRIPTS = Path(__file__).resolve().with_name("scripts")
FEATURES = ("8",)  # synthetic_shard.py: 8 features, one label
LABELS = ("1",)
HEALTH_CHECK_PERIOD_S = 2
FRONTEND_TIMEOUT_S = 240.0
ENVOY_STOP_TIMEOUT_S = 30.0


@dataclass
class Envoy:
    """A running envoy process."""

    name: str
    folder: Path
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the envoy process so far (from /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process_group(self.process, ENVOY_STOP_TIMEOUT_S)


@dataclass
class Federation:
    """A director and the envoys started for one test."""

    venv: OpenflVenv
    folder: Path
    director: DirectorProcess
    pki: Pki | None = None
    envoys: list[Envoy] = field(default_factory=list)
    experiments: int = 0

    @property
    def running(self) -> RunningDirector:
        return self.director.running

    def _tls_flags(self, name: str) -> list[str]:
        if self.pki is None:
            return ["--disable-tls"]
        pair = self.pki.clients[name]
        return ["-rc", str(self.pki.ca_cert), "-pk", str(pair.key), "-oc", str(pair.cert)]

    def _envoy_folder(self, name: str, seed: int, **params: object) -> Path:
        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        shutil.copy(SCRIPTS / "synthetic_shard.py", folder)
        settings = {"cuda_devices": [], "install_requirements": False, **params}
        lines = ["params:"] + [f"  {key}: {json.dumps(value)}" for key, value in settings.items()]
        lines += [
            "shard_descriptor:",
            "  template: synthetic_shard.SyntheticShardDescriptor",
            "  params:",
            f"    seed: {seed}",
        ]
        (folder / "envoy_config.yaml").write_text("\n".join(lines) + "\n")
        return folder

    def _start(self, name: str, folder: Path, command: list[str]) -> Envoy:
        log = folder / "envoy.log"
        with open(log, "ab") as log_file:
            process = subprocess.Popen(
                command, cwd=folder, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200"),
            )  # fmt: skip
        envoy = Envoy(name, folder, log, process)
        self.envoys.append(envoy)
        return envoy

    def shardclient_envoy(self, name: str, seed: int, *args: str, **params: object) -> Envoy:
        """``shardclient run`` in a folder of its own (envoy config, shard module, work dir)."""
        folder = self._envoy_folder(name, seed, **params)
        command = [
            str(self.venv.root / "bin" / "shardclient"), "run", "-n", name,
            "-dh", HOST, "-dp", str(self.running.port), *self._tls_flags(name),
            "-ec", "envoy_config.yaml", "--workdir", "work", *args,
        ]  # fmt: skip
        return self._start(name, folder, command)

    def openfl_envoy(self, name: str, seed: int) -> Envoy:
        """OpenFL's own Envoy class with shardclient's ShardDirectorClient swapped in."""
        folder = self._envoy_folder(name, seed)
        shutil.copy(SCRIPTS / "openfl_envoy.py", folder)
        command = [
            str(self.venv.python), "openfl_envoy.py", "--name", name, "--host", HOST,
            "--port", str(self.running.port), "--seed", str(seed),
        ]  # fmt: skip
        if self.pki is not None:
            pair = self.pki.clients[name]
            command += [
                "--root-certificate", str(self.pki.ca_cert),
                "--private-key", str(pair.key), "--certificate", str(pair.cert),
            ]  # fmt: skip
        return self._start(name, folder, command)

    def restart_envoy(self, envoy: Envoy) -> Envoy:
        envoy.stop()
        self.envoys.remove(envoy)
        restarted = self._start(envoy.name, envoy.folder, list(map(str, envoy.process.args)))  # type: ignore[arg-type]  # Popen.args is the list given above
        return restarted

    def online(self, expect: Sequence[str]) -> list[str]:
        """The envoys the director lists as online, once ``expect`` are (a frontend call)."""
        result = self.run_frontend("registry", expect, registry=True)
        online = result["online"]
        assert isinstance(online, list)
        return [str(name) for name in online]

    def run_frontend(
        self, name: str, expect: Sequence[str], *, fail: bool = False, no_wait: bool = False,
        registry: bool = False,
    ) -> dict[str, object]:  # fmt: skip
        """Submit experiment ``name`` through OpenFL's interactive API, in a fresh folder (the
        frontend packs its whole working directory); unless ``no_wait``, stream its metrics
        until it ends and fetch the trained model. Returns the frontend's result."""
        self.experiments += 1
        folder = self.folder / f"frontend-{self.experiments}"
        folder.mkdir()
        for script in ("frontend.py", "np_adapter.py", "synthetic_shard.py"):
            shutil.copy(SCRIPTS / script, folder)
        command = [
            str(self.venv.python), "frontend.py", "--host", HOST,
            "--port", str(self.running.port), "--agg-port", str(free_port()), "--name", name,
            "--timeout", str(FRONTEND_TIMEOUT_S),
        ]  # fmt: skip
        for envoy in expect:
            command += ["--expect", envoy]
        if fail:
            command.append("--fail")
        if no_wait:
            command.append("--no-wait")
        if registry:
            command.append("--registry")
        if self.pki is not None:
            pair = self.pki.clients["frontend"]
            command += [
                "--root-certificate", str(self.pki.ca_cert),
                "--private-key", str(pair.key), "--certificate", str(pair.cert),
                "--client-id", "frontend",
            ]  # fmt: skip
        result = subprocess.run(
            command, cwd=folder, capture_output=True, text=True, timeout=FRONTEND_TIMEOUT_S + 60,
            env=dict(os.environ, COLUMNS="200"),
        )  # fmt: skip
        found = re.search(r"^RESULT (.*)$", result.stdout, re.MULTILINE)
        if result.returncode != 0 or found is None:
            raise AssertionError(
                f"the frontend failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
                f"{result.stderr[-3000:]}\n{self.diagnostics()}"
            )
        loaded: dict[str, object] = json.loads(found.group(1))
        return loaded

    def director_log(self) -> str:
        """The director's log as one line of text (see one_line)."""
        return one_line(self.running.log_text())

    def diagnostics(self) -> str:
        return diagnostics(self.director_log(), self.envoys)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
        """Poll ``condition`` (log contents, files) until it holds; fail with the logs."""
        wait_for(condition, what, timeout, self.envoys, self.diagnostics)


def one_line(text: str) -> str:
    """A log as one line of text: rich wraps it and puts the logging module's file:line in a
    right-hand column, both undone here."""
    text = re.sub(r"\s+\S+\.py:\d+\s*$", " ", text, flags=re.MULTILINE)
    text = re.sub(r"^\[\d\d:\d\d:\d\d\]", " ", text, flags=re.MULTILINE)
    return re.sub(r"\s+", " ", text)


def diagnostics(director_log: str, envoys: Sequence[Envoy]) -> str:
    """The tails of the director's and the envoys' logs, for a failure message."""
    parts = [f"--- director log (tail):\n{director_log[-4000:]}"]
    for envoy in envoys:
        parts.append(f"--- {envoy.name} log (tail):\n{envoy.log_text()[-4000:]}")
    return "\n".join(parts)


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout: float,
    envoys: Sequence[Envoy],
    logs: Callable[[], str],
) -> None:
    """Poll ``condition`` until it holds; fail with ``logs()`` when an envoy exits or the
    time is up."""
    deadline = time.monotonic() + timeout
    while not condition():
        for envoy in envoys:
            if envoy.process.poll() is not None:
                raise AssertionError(
                    f"envoy {envoy.name} exited with {envoy.process.returncode} while "
                    f"waiting for {what}\n{logs()}"
                )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs()}")
        time.sleep(0.5)


@contextmanager
def federation(venv: OpenflVenv, folder: Path, *, pki: Pki | None = None) -> Iterator[Federation]:
    """A running director (TLS when ``pki`` is given); stops it and every envoy at the end."""
    certs = None
    if pki is not None:
        certs = EnvoyCerts(
            root_certificate=pki.ca_cert, private_key=pki.client.key,
            certificate=pki.client.cert, common_name="frontend",
        )  # fmt: skip
    director = DirectorProcess(
        venv, folder / "director", certs,
        server_key=pki.server.key if pki else None, server_cert=pki.server.cert if pki else None,
        sample_shape=FEATURES, target_shape=LABELS, health_check_period=HEALTH_CHECK_PERIOD_S,
    )  # fmt: skip
    fed = Federation(venv=venv, folder=folder, director=director, pki=pki)
    director.start()
    try:
        yield fed
    finally:
        for envoy in fed.envoys:
            envoy.stop()
        director.stop()

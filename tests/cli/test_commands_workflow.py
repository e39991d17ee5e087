"""The shardclient command against an OpenFL 1.9 Workflow-API director (a LocalWorkflowDirector),
with the envoy config and the flags of OpenFL 1.9's ``fx envoy start``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardclient.testing import LocalDirector, LocalWorkflowDirector
from tests.helpers.cli import COMMAND, LIMIT, one_error_line, run_command, wait_for
from tests.helpers.director import SAMPLE_SHAPE, TARGET_SHAPE
from tests.helpers.processes import gone

STATE = ".shardclient-envoy-state.json"


@pytest.fixture
def director() -> Iterator[LocalWorkflowDirector]:
    with LocalWorkflowDirector(health_check_period=1) as local:
        yield local


def _envoy_folder(tmp_path: Path, port: int, name: str = "Portland") -> Path:
    """An envoy folder as OpenFL 1.9's tutorials have it: the config and the private
    attributes module beside it."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "shard_data.py").write_text("private_attributes = {'rows': 3}\n")
    (folder / "envoy_config.yaml").write_text(
        "settings:\n"
        "  director_host: 127.0.0.1\n"
        f"  director_port: {port}\n"
        "params:\n"
        "  install_requirements: false\n"
        f"{name}:\n"
        "  private_attributes: shard_data.private_attributes\n"
    )
    return folder


def _run_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``shardclient ARGS`` started in ``folder``, as a data owner runs fx envoy start."""
    return subprocess.run(
        [*COMMAND, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=LIMIT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_fx_envoy_start_s_arguments_join_a_1_9_director(
    director: LocalWorkflowDirector, tmp_path: Path
) -> None:
    """`fx envoy start -n NAME -c envoy_config.yaml --disable-tls` becomes `shardclient run
    -n NAME -c envoy_config.yaml --disable-tls`, from the same folder: the director's address
    comes from the config, and the envoy says which protocol it speaks."""
    folder = _envoy_folder(tmp_path, director.port)
    director.submit_experiment("FedAvgFlow", b"PK archive", ["Portland"])
    done = _run_in(
        folder, "run", "-n", "Portland", "-c", "envoy_config.yaml", "--disable-tls",
        "--once", "--download-only",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Envoy Portland: an OpenFL 1.9 director at 127.0.0.1:" in done.stderr
    assert (folder / "FedAvgFlow.zip").read_bytes() == b"PK archive"
    assert director.connections == {"Portland": 1}
    status = director.envoys["Portland"]
    assert status is not None  # health checks reached it


def test_a_failed_experiment_is_kept_logged_and_never_run_again(
    director: LocalWorkflowDirector, tmp_path: Path
) -> None:
    """OpenFL 1.9's protocol has no failure report: the failure goes to the log (with the
    reason) and the state file, and the experiment the director keeps offering is not run
    again."""
    folder = _envoy_folder(tmp_path, director.port)
    director.submit_experiment("BrokenFlow", b"zip", ["Portland"])
    script = "import sys; sys.stderr.write('flow step raised\\n'); sys.exit(3)"
    log = tmp_path / "envoy.log"
    with log.open("w") as stderr:
        envoy = subprocess.Popen(
            [*COMMAND, "run", "-n", "Portland", "-c", "envoy_config.yaml", "--disable-tls",
             "--exec", f'{sys.executable} -c "{script}"'],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_for(  # offered the same experiment again, it says why it does not take it
            lambda: "not running it again" in log.read_text(),
            envoy,
            "the envoy never asked again after the failure",
        )
    finally:
        envoy.terminate()
        envoy.wait(timeout=LIMIT)
    stderr_text = log.read_text()
    state = json.loads((folder / STATE).read_text())
    (entry,) = state["experiments"]
    assert entry["name"] == "BrokenFlow" and entry["outcome"] == "failed"
    assert "flow step raised" in entry["detail"]
    assert "has no failure report" in stderr_text and "flow step raised" in stderr_text
    assert stderr_text.count("Running ") == 1  # the command ran once


def test_an_envoy_started_before_its_director_waits_for_it(tmp_path: Path) -> None:
    with LocalWorkflowDirector(health_check_period=1) as director:
        port = director.port
        director.stop_sync()
        folder = _envoy_folder(tmp_path, port)
        log = tmp_path / "envoy.log"
        with log.open("w") as stderr:
            envoy = subprocess.Popen(
                [*COMMAND, "run", "-n", "Portland", "-c", "envoy_config.yaml", "--disable-tls",
                 "--once", "--download-only", "--retry-attempts", "1"],
                cwd=folder, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            wait_for(
                lambda: "waiting for the director" in log.read_text(),
                envoy,
                "the envoy never said it waits for its director",
            )
            director.start_sync()
            director.submit_experiment("LateFlow", b"zip", ["Portland"])
            envoy.wait(timeout=LIMIT)
        finally:
            if envoy.poll() is None:
                envoy.kill()
    assert envoy.returncode == 0, log.read_text()
    assert (folder / "LateFlow.zip").read_bytes() == b"zip"
    assert "the director answered" in log.read_text()


def test_a_1_5_1_7_director_is_named_for_a_1_9_envoy_config(tmp_path: Path) -> None:
    with LocalDirector(sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE) as older:
        folder = _envoy_folder(tmp_path, older.port)
        done = _run_in(
            folder, "run", "-n", "Portland", "-c", "envoy_config.yaml", "--disable-tls",
            "--once", "--download-only",
        )  # fmt: skip
    assert done.returncode == 4, done.stderr
    line = one_error_line(done.stderr)
    assert "does not speak the OpenFL 1.9 director protocol" in line
    assert "is it an OpenFL 1.5-1.7 director?" in line


def test_flags_override_the_config_s_address_and_tls_needs_its_files(
    director: LocalWorkflowDirector, tmp_path: Path
) -> None:
    folder = _envoy_folder(tmp_path, 1)  # the config's port is wrong on purpose
    done = _run_in(
        folder, "health", "-n", "Portland", "-c", "envoy_config.yaml", "--disable-tls",
        "-dh", director.host, "-dp", str(director.port), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"health_check_period": 1}
    assert director.connections == {"Portland": 1}  # NOT_FOUND first: it connected, then asked
    done = _run_in(folder, "run", "-n", "Portland", "-c", "envoy_config.yaml", "--tls")
    assert done.returncode == 2
    assert "TLS (the default) needs -rc/--root-cert-path" in one_error_line(done.stderr)
    done = _run_in(folder, "run", "-n", "Portland", "--tls", "--disable-tls")
    assert "--tls and --disable-tls exclude each other" in one_error_line(done.stderr)


def test_a_config_of_neither_generation_says_so(tmp_path: Path) -> None:
    (tmp_path / "envoy_config.yaml").write_text("params:\n  install_requirements: false\n")
    done = run_command("run", "-n", "x", "-c", str(tmp_path / "envoy_config.yaml"), "--disable-tls")
    assert done.returncode == 2
    assert "neither an OpenFL 1.5-1.7 envoy config" in one_error_line(done.stderr)


def test_a_restarted_1_9_director_s_experiment_is_let_go(
    director: LocalWorkflowDirector, tmp_path: Path
) -> None:
    """As for 1.5-1.7: the restarted director forgot the envoy (EnvoyNotFoundError) and the
    experiment; the envoy stops its command, keeps it as lost, and runs the next experiment,
    even one of the same name (1.9 names experiments after their flow class)."""
    folder = _envoy_folder(tmp_path, director.port)
    pids = tmp_path / "pids"
    script = (
        "import os, sys, time; open(os.environ['PIDS'], 'a').write(f'{os.getpid()} '); "
        "time.sleep(300 if os.environ['SHARDCLIENT_EXPERIMENT'] == 'Flow' and "
        "len(open(os.environ['PIDS']).read().split()) == 1 else 0)"
    )
    log = tmp_path / "envoy.log"
    director.submit_experiment("Flow", b"zip", ["Portland"])
    with log.open("w") as stderr:
        envoy = subprocess.Popen(
            [*COMMAND, "run", "-n", "Portland", "-c", "envoy_config.yaml", "--disable-tls",
             "--exec", f'{sys.executable} -c "{script}"'],
            cwd=folder, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
            stdin=subprocess.DEVNULL, env={**os.environ, "PIDS": str(pids)},
        )  # fmt: skip
    try:
        wait_for(lambda: pids.exists() and pids.read_text().strip() != "", envoy, "no start")
        first = int(pids.read_text().split()[0])
        director.stop_sync()
        director.forget_everything()
        director.start_sync()
        wait_for(lambda: _outcomes(folder) == ["lost"], envoy, "the experiment was never let go")
        assert gone(first)
        (lost,) = json.loads((folder / STATE).read_text())["experiments"]
        assert "restarted during the experiment" in lost["detail"]
        wait_for(lambda: "let go" in log.read_text(), envoy, "no line saying it let go")
        director.submit_experiment("Flow", b"zip", ["Portland"])  # the same flow, run again
        wait_for(lambda: _outcomes(folder) == ["succeeded"], envoy, "the next run never succeeded")
    finally:
        envoy.terminate()
        envoy.wait(timeout=LIMIT)
    assert len(pids.read_text().split()) == 2  # it ran again, once


def _outcomes(folder: Path) -> list[str]:
    state = json.loads((folder / STATE).read_text())
    return [entry["outcome"] for entry in state["experiments"]]

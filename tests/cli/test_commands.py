"""The shardclient command, driven as a subprocess against a LocalDirector on loopback."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from shardclient._client.tls import server_ssl_context
from shardclient.testing import LocalDirector
from tests.helpers.certs import Pki
from tests.helpers.cli import COMMAND, LIMIT, one_error_line, run_command, wait_for
from tests.helpers.paths import FIXTURES
from tests.helpers.processes import gone


@pytest.fixture
def envoy_config(tmp_path: Path) -> Path:
    """OpenFL's envoy config format; its descriptor returns int shapes 28x28 -> 1, it names
    no CUDA devices (this machine may have none) and asks for no review."""
    folder = tmp_path / "config"
    shutil.copytree(FIXTURES / "envoy_ints", folder)
    config = folder / "envoy_config.yaml"
    text = config.read_text().replace("cuda_devices: [0, 2]", "cuda_devices: []")
    config.write_text(text.replace("review_experiment: true", "review_experiment: false"))
    return config


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "work"


def _connection(director: LocalDirector, shard: str = "s1") -> list[str]:
    return ["-n", shard, "-dh", director.host, "-dp", str(director.port), "--disable-tls"]


def test_run_once_with_a_command_that_succeeds(
    director: LocalDirector, envoy_config: Path, workdir: Path, tmp_path: Path
) -> None:
    director.submit_experiment("exp-ok", b"archive bytes", ["s1"])
    seen = tmp_path / "seen.json"
    script = (
        "import json, os; json.dump({k: os.environ[k] for k in "
        "('SHARDCLIENT_ARCHIVE', 'SHARDCLIENT_EXPERIMENT')}, open(os.environ['SEEN'], 'w'))"
    )
    done = run_command(
        "run",
        *_connection(director),
        "-ec",
        str(envoy_config),
        "--workdir",
        str(workdir),
        "--once",
        "--exec",
        f'{sys.executable} -c "{script}"',
        env={"SEEN": str(seen)},
    )
    assert done.returncode == 0, done.stderr
    archive = workdir / "exp-ok.zip"
    assert archive.read_bytes() == b"archive bytes"
    assert json.loads(seen.read_text()) == {
        "SHARDCLIENT_ARCHIVE": str(archive),
        "SHARDCLIENT_EXPERIMENT": "exp-ok",
    }
    assert director.failures == []
    assert director.shards["s1"].sample_shape == ["28", "28"]
    assert director.statuses["s1"].is_experiment_running in (True, False)


def test_run_once_reports_a_failing_command(
    director: LocalDirector, envoy_config: Path, workdir: Path
) -> None:
    director.submit_experiment("exp-bad", b"x", ["s1"])
    script = "import sys; sys.stderr.write('training blew up\\n'); sys.exit(3)"
    done = run_command(
        "run",
        *_connection(director),
        "-ec",
        str(envoy_config),
        "--workdir",
        str(workdir),
        "--once",
        "--exec",
        f'{sys.executable} -c "{script}"',
    )
    assert done.returncode == 5, done.stderr
    assert "training blew up" in done.stderr  # relayed as it came
    (failure,) = director.failures
    assert failure.experiment_name == "exp-bad"
    assert failure.error_code == 3
    assert "training blew up" in failure.error_description


def test_refused_registration_exits_2(envoy_config: Path, workdir: Path) -> None:
    with LocalDirector(sample_shape=["32", "32"], target_shape=["1"]) as other:
        done = run_command(
            "run",
            *_connection(other),
            "-ec",
            str(envoy_config),
            "--workdir",
            str(workdir),
            "--once",
            "--download-only",
        )
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "refused" in line and "['28', '28']" in line and "['1']" in line


def test_sigterm_during_download_removes_the_partial_file(
    director: LocalDirector, envoy_config: Path, workdir: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "archive.fifo"
    os.mkfifo(fifo)
    workdir.mkdir()
    envoy = subprocess.Popen(
        [
            *COMMAND,
            "run",
            *_connection(director),
            "-ec",
            str(envoy_config),
            "--workdir",
            str(workdir),
            "--once",
            "--download-only",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    writer = None
    try:
        director.submit_experiment("slow", fifo, ["s1"])
        writer = fifo.open("wb")  # the director reads the archive as the envoy downloads it
        writer.write(os.urandom(3 * 1024 * 1024))
        writer.flush()
        wait_for(
            lambda: any(p.suffix == ".part" for p in workdir.iterdir()),
            envoy,
            "the download never started",
        )
        envoy.send_signal(signal.SIGTERM)
        _, stderr = envoy.communicate(timeout=LIMIT)
    finally:
        if writer is not None:
            writer.close()
        if envoy.poll() is None:
            envoy.kill()
    assert envoy.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert [p.name for p in workdir.iterdir()] == [".shardclient-envoy-state.json"]  # no .part


def test_sigterm_during_the_command_stops_it_and_its_children(
    director: LocalDirector, envoy_config: Path, workdir: Path, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "open(os.environ['PIDS'], 'w').write(f'{os.getpid()} {child.pid}'); time.sleep(120)"
    )
    director.submit_experiment("long", b"x", ["s1"])
    envoy = subprocess.Popen(
        [
            *COMMAND,
            "run",
            *_connection(director),
            "-ec",
            str(envoy_config),
            "--workdir",
            str(workdir),
            "--once",
            "--exec",
            f'{sys.executable} -c "{script}"',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PIDS": str(pids)},
    )
    try:
        wait_for(
            lambda: pids.exists() and len(pids.read_text().split()) == 2,
            envoy,
            "the command never started",
        )
        command_pid, grandchild_pid = map(int, pids.read_text().split())
        envoy.send_signal(signal.SIGTERM)
        _, stderr = envoy.communicate(timeout=LIMIT)
    finally:
        if envoy.poll() is None:
            envoy.kill()
    assert envoy.returncode == 143, stderr
    assert gone(command_pid) and gone(grandchild_pid)
    (failure,) = director.failures  # reported once: the experiment did not complete here
    assert failure.experiment_name == "long"
    assert "stopped during the experiment" in failure.error_description


def test_sigterm_during_a_one_shot_download(
    director: LocalDirector, workdir: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "archive.fifo"
    os.mkfifo(fifo)
    workdir.mkdir()
    director.submit_experiment("slow", fifo, ["s1"])
    envoy = subprocess.Popen(
        [*COMMAND, "download", *_connection(director), "slow", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    with fifo.open("wb") as writer:
        writer.write(os.urandom(3 * 1024 * 1024))
        writer.flush()
        try:
            wait_for(
                lambda: any(p.suffix == ".part" for p in workdir.iterdir()),
                envoy,
                "the download never started",
            )
            envoy.send_signal(signal.SIGTERM)
            _, stderr = envoy.communicate(timeout=LIMIT)
        finally:
            if envoy.poll() is None:
                envoy.kill()
    assert envoy.returncode == 143, stderr
    assert list(workdir.iterdir()) == []


def test_demo() -> None:
    done = run_command("demo")
    assert done.returncode == 0, done.stderr
    for step in (
        "1. registered",
        "2. health check",
        "3. experiment",
        "4. downloaded",
        "5. failure reported",
        "verified",
    ):
        assert step in done.stdout


def test_gpus_without_nvml_or_with_it() -> None:
    done = run_command("gpus", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    if not report["available"]:
        assert report["devices"] == [] and report["reason"]
        plain = run_command("gpus")
        assert plain.returncode == 0 and "NVML is unavailable" in plain.stdout
    else:
        assert all("name" in device for device in report["devices"])


def test_one_shot_commands(director: LocalDirector, envoy_config: Path, workdir: Path) -> None:
    connection = _connection(director)
    registered = run_command("register", *connection, "-ec", str(envoy_config), "--json")
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout) == {"accepted": True, "shard_name": "s1"}
    health = run_command("health", *connection, "-ec", str(envoy_config), "--json")
    assert json.loads(health.stdout) == {"health_check_period": 7}
    director.submit_experiment("one-shot", b"payload", ["s1"])
    waited = run_command("wait", *connection, "--json")
    assert json.loads(waited.stdout) == {"experiment_name": "one-shot"}
    fetched = run_command("download", *connection, "one-shot", "--workdir", str(workdir), "--json")
    result = json.loads(fetched.stdout)
    assert Path(result["path"]).read_bytes() == b"payload" and result["size"] == 7


def test_options_from_environment(director: LocalDirector, envoy_config: Path) -> None:
    env = {
        "SHARDCLIENT_SHARD_NAME": "env-shard",
        "SHARDCLIENT_DIRECTOR_HOST": director.host,
        "SHARDCLIENT_DIRECTOR_PORT": str(director.port),
        "SHARDCLIENT_DISABLE_TLS": "1",
        "SHARDCLIENT_ENVOY_CONFIG_PATH": str(envoy_config),
    }
    done = run_command("register", env=env)
    assert done.returncode == 0, done.stderr
    assert "env-shard" in director.shards


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--bogus"], 2, "No such option"),
        (
            ["run", "-n", "s", "-dh", "h", "--api", "interactive", "--disable-tls"],
            2,
            "needs -dh/--director-host and -dp/--director-port",
        ),
        (
            [
                "register",
                "-n",
                "s",
                "-dh",
                "127.0.0.1",
                "-dp",
                "1",
                "--disable-tls",
                "-ec",
                "/nonexistent/envoy.yaml",
            ],
            3,
            "/nonexistent/envoy.yaml",
        ),
        (
            [
                "register",
                "-n",
                "s",
                "-dh",
                "127.0.0.1",
                "-dp",
                "1",
                "-rc",
                "/nonexistent/root.crt",
                "-pk",
                "k",
                "-oc",
                "c",
            ],
            3,
            "/nonexistent/root.crt",
        ),
    ],
)
def test_user_errors_end_in_one_line(
    args: list[str], code: int, message: str, envoy_config: Path
) -> None:
    if "register" in args and "-ec" not in args:
        args = [*args, "-ec", str(envoy_config)]
    done = run_command(*args)
    assert done.returncode == code
    assert message in one_error_line(done.stderr)


def test_unreachable_director_exits_4(envoy_config: Path, free_port: int) -> None:
    done = run_command(
        "register",
        "-n",
        "s",
        "-dh",
        "127.0.0.1",
        "-dp",
        str(free_port),
        "--disable-tls",
        "--retry-attempts",
        "1",
        "-ec",
        str(envoy_config),
    )
    assert done.returncode == 4
    assert f"127.0.0.1:{free_port}" in one_error_line(done.stderr)


def test_debug_log_level_shows_the_traceback(envoy_config: Path, free_port: int) -> None:
    done = run_command(
        "--log-level",
        "debug",
        "register",
        "-n",
        "s",
        "-dh",
        "127.0.0.1",
        "-dp",
        str(free_port),
        "--disable-tls",
        "--retry-attempts",
        "1",
        "-ec",
        str(envoy_config),
    )
    assert done.returncode == 4 and "Traceback" in done.stderr


def test_run_without_openfl_refuses_at_start(
    director: LocalDirector, envoy_config: Path, workdir: Path
) -> None:
    if importlib.util.find_spec("openfl") is not None:
        pytest.skip("openfl is installed here, so `run` has a collaborator to run")
    done = run_command(
        "run", *_connection(director), "-ec", str(envoy_config), "--workdir", str(workdir)
    )
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "pip install '.[openfl]'" in line and "--exec" in line
    assert director.shards == {}  # refused before contacting the director


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--exec", "true", "--download-only"], "--exec and --download-only exclude each other"),
        (["--exec", "python -c 'unbalanced"], "'--exec'"),
        (["--exec", "   "], "an empty command"),
    ],
)
def test_bad_run_flags_exit_2(
    director: LocalDirector, envoy_config: Path, workdir: Path, extra: list[str], message: str
) -> None:
    done = run_command(
        "run", *_connection(director), "-ec", str(envoy_config), "--workdir", str(workdir), *extra
    )
    assert done.returncode == 2
    assert message in one_error_line(done.stderr)
    assert director.shards == {}


@pytest.mark.parametrize(("typed", "ran"), [(b"y\n", True), (b"n\n", False)])
def test_review_asks_on_the_terminal(
    director: LocalDirector,
    envoy_config: Path,
    workdir: Path,
    tmp_path: Path,
    typed: bytes,
    ran: bool,
) -> None:
    envoy_config.write_text(
        envoy_config.read_text().replace("review_experiment: false", "review_experiment: true")
    )
    marker = tmp_path / "ran"
    director.submit_experiment("reviewed", b"archive", ["s1"])
    primary, secondary = os.openpty()
    try:
        os.write(primary, typed)  # the answer waits in the terminal's input
        done = subprocess.run(
            [*COMMAND, "run", *_connection(director), "-ec", str(envoy_config),
             "--workdir", str(workdir), "--once",
             "--exec", f"{sys.executable} -c \"open('{marker}', 'w')\""],
            stdin=secondary, capture_output=True, text=True, timeout=LIMIT, check=False,
        )  # fmt: skip
    finally:
        os.close(primary)
        os.close(secondary)
    assert "Experiment reviewed for shard s1" in done.stderr and "Approve? [y/N]" in done.stderr
    assert marker.exists() is ran
    if ran:
        assert done.returncode == 0, done.stderr
        assert director.failures == []
    else:
        assert done.returncode == 5, done.stderr
        (failure,) = director.failures
        assert "declined at review" in failure.error_description


def test_handled_experiments_are_not_run_again_unless_asked(
    director: LocalDirector, envoy_config: Path, workdir: Path
) -> None:
    director.submit_experiment("once", b"archive", ["s1"])
    first = run_command(
        "run",
        *_connection(director),
        "-ec",
        str(envoy_config),
        "--workdir",
        str(workdir),
        "--once",
        "--exec",
        "false",
    )
    assert first.returncode == 5, first.stderr
    (workdir / "once.zip").unlink()
    # the director still offers it (it failed); --rerun takes it again on purpose
    again = run_command(
        "run",
        *_connection(director),
        "-ec",
        str(envoy_config),
        "--workdir",
        str(workdir),
        "--once",
        "--download-only",
        "--rerun",
        "once",
    )
    assert again.returncode == 0, again.stderr
    assert (workdir / "once.zip").read_bytes() == b"archive"
    assert "will run again" in again.stderr
    state = json.loads((workdir / ".shardclient-envoy-state.json").read_text())
    assert [(e["name"], e["outcome"]) for e in state["experiments"]] == [("once", "downloaded")]


def test_a_corrupt_state_file_exits_3(
    director: LocalDirector, envoy_config: Path, workdir: Path
) -> None:
    workdir.mkdir()
    (workdir / ".shardclient-envoy-state.json").write_text("{")
    done = run_command(
        "run",
        *_connection(director),
        "-ec",
        str(envoy_config),
        "--workdir",
        str(workdir),
        "--download-only",
    )
    assert done.returncode == 3
    assert ".shardclient-envoy-state.json: not valid JSON" in one_error_line(done.stderr)


def test_tls_flags_missing_are_named_as_flags(envoy_config: Path) -> None:
    done = run_command(
        "register",
        "-n",
        "s",
        "-dh",
        "127.0.0.1",
        "-dp",
        "1",
        "-rc",
        "root.crt",
        "-ec",
        str(envoy_config),
    )
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "-pk/--private-key-path, -oc/--public-cert-path" in line and "--disable-tls" in line
    assert "root_certificate" not in line  # the library's keyword names mean nothing here


def test_health_needs_no_envoy_config(director: LocalDirector, tmp_path: Path) -> None:
    director.submit_experiment("unused", b"x", ["s1"])
    registered = run_command(
        "register",
        *_connection(director),
        "-ec",
        str(FIXTURES / "envoy_strings" / "envoy_config.yaml"),
    )
    assert registered.returncode == 0, registered.stderr
    done = subprocess.run([*COMMAND, "health", *_connection(director), "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=LIMIT, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"health_check_period": 7}


def test_an_unreachable_director_gives_one_line_per_attempt(free_port: int) -> None:
    done = run_command(
        "register",
        "-n",
        "s",
        "-dh",
        "127.0.0.1",
        "-dp",
        str(free_port),
        "--disable-tls",
        "--retry-attempts",
        "3",
        "-ec",
        str(FIXTURES / "envoy_strings" / "envoy_config.yaml"),
    )
    assert done.returncode == 4
    attempts = [line for line in done.stderr.splitlines() if re.search(r"attempt \d of", line)]
    assert [re.findall(r"attempt \d of 3", line) for line in attempts] == [
        ["attempt 1 of 3"],
        ["attempt 2 of 3"],
    ]
    assert all(line.count("UpdateShardInfo") == 1 for line in attempts)  # named once
    assert "--retry-attempts" in one_error_line(done.stderr)


def test_help_summaries_are_whole_sentences() -> None:
    commands = run_command("--help").stdout.split("Commands:")[1]
    assert "..." not in commands and commands.count(".") == 7, commands


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--timeout", "nan", "--timeout must be finite and > 0, got nan"),
        ("--timeout", "inf", "--timeout must be finite and > 0, got inf"),
        ("-n", os.fsdecode(b"\xff"), "-n/--shard-name is not valid Unicode text"),
    ],
)
def test_values_click_lets_through_are_refused_as_usage_errors(
    envoy_config: Path, flag: str, value: str, message: str
) -> None:
    shard = [] if flag == "-n" else ["-n", "s"]
    done = run_command("register", "-dh", "127.0.0.1", "-dp", "1", "--disable-tls",
                "-ec", str(envoy_config), *shard, flag, value)  # fmt: skip
    assert done.returncode == 2
    assert message in one_error_line(done.stderr)


def test_health_checks_keep_their_period_while_nobody_reads_stderr(
    envoy_config: Path, workdir: Path
) -> None:
    """A paused terminal or a stalled log pipeline: the envoy's stderr is a pipe nobody reads
    while the experiment's output floods the log. Health checks go on; the log lines that did
    not fit are dropped and counted once the pipe moves again."""
    flood = (  # 64 KiB of output 4 times a second, for as long as it runs
        "import sys, time; [(sys.stdout.write(('y' * 200 + '\\n') * 320), sys.stdout.flush(), "
        "time.sleep(0.25)) for _ in iter(int, 1)]"
    )
    with LocalDirector(
        sample_shape=["28", "28"], target_shape=["1"], health_check_period=1
    ) as director:
        director.submit_experiment("noisy", b"x", ["s1"])
        envoy = subprocess.Popen(
            [*COMMAND, "run", *_connection(director), "-ec", str(envoy_config),
             "--workdir", str(workdir), "--exec", f'{sys.executable} -c "{flood}"'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert envoy.stderr is not None
        pipe = envoy.stderr.fileno()
        fcntl.fcntl(pipe, F_SETPIPE_SZ, 4096)  # one page: full after a few log lines
        full = fcntl.fcntl(pipe, F_GETPIPE_SZ) // 2  # writes may not fill every page whole
        try:
            wait_for(lambda: _unread(pipe) >= full, envoy, "the pipe never filled")  # type: ignore[arg-type]  # bytes mode
            before = director.health_checks["s1"]
            wait_for(
                lambda: director.health_checks["s1"] >= before + 3,
                envoy,  # type: ignore[arg-type]  # bytes mode
                "no health checks while stderr was not read",
            )
            assert _unread(pipe) >= full  # nobody read it meanwhile
        finally:
            envoy.terminate()
            _, output = envoy.communicate(timeout=LIMIT)
    assert b"log records were dropped: the log output did not keep up" in output


F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032  # Linux's fcntl commands for a pipe's capacity


def _unread(fd: int) -> int:
    """Bytes waiting in pipe ``fd``."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]


def test_a_tls_mismatch_is_one_line_naming_the_flag_exit_4(
    director: LocalDirector, envoy_config: Path, pki: Pki
) -> None:
    context = server_ssl_context(
        root_certificate=pki.ca_cert, private_key=pki.server.key, certificate=pki.server.cert
    )
    with LocalDirector(sample_shape=["28", "28"], target_shape=["1"], tls=context) as tls:
        plain = run_command("register", *_connection(tls), "-ec", str(envoy_config))
    assert plain.returncode == 4
    assert one_error_line(plain.stderr).endswith(
        f"the director at {tls.host}:{tls.port} speaks TLS; this envoy was started with "
        "--disable-tls (tls=False): give it its TLS files (-rc, -pk, -oc) instead"
    )
    assert "attempt 1 of" not in plain.stderr  # no retry loop
    files = ["-rc", str(pki.ca_cert), "-pk", str(pki.client.key), "-oc", str(pki.client.cert)]
    address = ["-n", "s1", "-dh", "localhost", "-dp", str(director.port)]
    encrypted = run_command("register", *address, *files, "-ec", str(envoy_config))
    assert encrypted.returncode == 4
    assert one_error_line(encrypted.stderr).endswith(
        f"the director at localhost:{director.port} speaks plain text (it was started with "
        "--disable-tls); start the envoy with --disable-tls too (tls=False)"
    )

"""The envoy's experiment handling against a LocalDirector, with a stand-in collaborator.

The stand-in (a small script) takes the place of ``python -m shardclient._envoy.collaborator.interactive``
so that these tests run without OpenFL: it records where and how it was started, and fails
or hangs when the plan says so. The real collaborator is exercised by the federation tests
(tests/interop/test_federation.py).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import logging
import shutil
import sys
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from shardclient import AsyncShardDirectorClient
from shardclient._envoy.directors import InteractiveDirector
from shardclient._envoy.envoy import Envoy
from shardclient._envoy.experiment import Approver, ExperimentSettings, Mode
from shardclient._envoy.state import HandledExperiments, Outcome
from shardclient.testing import LocalDirector
from tests.helpers.director import SAMPLE_SHAPE, TARGET_SHAPE, Descriptor
from tests.helpers.processes import gone

pytestmark = pytest.mark.anyio

STAND_IN = """\
import json, os, sys, time
record = {"argv": sys.argv[1:], "cwd": os.getcwd(), "python": sys.executable,
          "pid": os.getpid()}
try:
    import tinypkg
    record["tinypkg"] = tinypkg.__file__
except ImportError:
    record["tinypkg"] = None
import shardclient
record["shardclient"] = shardclient.__file__
with open(os.environ["STAND_IN_RECORD"], "a") as out:
    out.write(json.dumps(record) + "\\n")
plan = open(os.path.join("plan", "plan.yaml")).read()
if "hang" in plan:
    time.sleep(300)
if "finish_when" in plan:  # a healthy experiment: ends when the test says so
    flag = plan.split("finish_when:", 1)[1].strip()
    while not os.path.exists(flag):
        time.sleep(0.05)
if "fail" in plan:
    sys.stderr.write("Traceback (most recent call last):\\nRuntimeError: failed on purpose\\n")
    sys.exit(1)
"""


def archive(
    plan: str = "rounds: 1\n", requirements: str = "", members: dict[str, bytes] | None = None
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("plan/plan.yaml", plan)
        zipped.writestr("requirements.txt", requirements)
        zipped.writestr("model.py", "weights = 1\n")
        for name, data in (members or {}).items():
            zipped.writestr(name, data)
    return buffer.getvalue()


@dataclass
class Setup:
    director: LocalDirector
    envoy: Envoy
    workdir: Path
    record: Path

    def runs(self) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def outcome(self, name: str) -> Outcome | None:
        entry = HandledExperiments(self.workdir).get(name)
        return entry.outcome if entry is not None else None


async def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    with anyio.fail_after(timeout, shield=False):
        while not condition():
            await anyio.sleep(0.02)


@asynccontextmanager
async def serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, approve: Approver | None = None,
    **settings: object,
) -> AsyncIterator[Setup]:  # fmt: skip
    """An envoy (collaborator mode, the stand-in as collaborator) serving a LocalDirector."""
    stand_in = tmp_path / "stand_in.py"
    stand_in.write_text(STAND_IN)
    record = tmp_path / "runs.jsonl"
    monkeypatch.setenv("STAND_IN_RECORD", str(record))
    config = tmp_path / "envoy_config.yaml"
    config.write_text("shard_descriptor:\n  template: unused.Descriptor\n")
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    async with LocalDirector(
        sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE, health_check_period=1
    ) as director, AsyncShardDirectorClient(
        director_host=director.host, director_port=director.port, shard_name="s1",
        tls=False, retry=None,
    ) as client:  # fmt: skip
        experiment_settings = ExperimentSettings(
            mode=Mode.COLLABORATOR, workdir=workdir, shard_name="s1", envoy_config=config,
            collaborator_command=(sys.executable, str(stand_in)),
            **settings,  # type: ignore[arg-type]  # the test's keyword settings
        )  # fmt: skip
        envoy = Envoy(
            InteractiveDirector(client, descriptor=Descriptor()),
            workdir=workdir,
            settings=experiment_settings,
            approve=approve,
        )
        async with anyio.create_task_group() as group:
            group.start_soon(envoy.serve)
            yield Setup(director, envoy, workdir, record)
            group.cancel_scope.cancel()


async def test_the_collaborator_runs_in_the_unpacked_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch, cuda_devices=(0, 2)) as setup:
        setup.director.submit_experiment("exp-1", archive(), ["s1"])
        await until(lambda: setup.outcome("exp-1") is Outcome.SUCCEEDED, "success")
    (run,) = setup.runs()
    argv = run["argv"]
    assert isinstance(argv, list)
    assert argv[argv.index("--shard-name") + 1] == "s1"
    assert argv[argv.index("--cuda-devices") + 1] == "0,2"
    assert argv[argv.index("--envoy-config") + 1] == str(tmp_path / "envoy_config.yaml")
    assert "--root-certificate" not in argv  # no TLS here
    folder = setup.workdir / "experiments" / "exp-1"
    assert run["cwd"] == str(folder / "workspace")
    assert not (folder / "workspace").exists()  # removed when it ended
    assert [p.name for p in folder.iterdir()] == ["output.log"]
    assert setup.director.failures == []


async def test_a_failure_is_reported_once_and_the_experiment_never_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path, monkeypatch) as setup:
        director = setup.director
        director.submit_experiment("bad", archive(plan="fail: true\n"), ["s1"])
        await until(lambda: len(director.failures) == 1, "the failure report")
        asked = director.waits["s1"]
        # the director keeps offering it at once; the envoy asks again, politely
        await until(lambda: director.waits["s1"] >= asked + 2, "two more asks", timeout=60)
        assert len(setup.runs()) == 1  # never downloaded or run again
        assert len(director.failures) == 1
        (failure,) = director.failures
        assert failure.error_code == 1
        assert "the collaborator exited with 1" in failure.error_description
        assert "RuntimeError: failed on purpose" in failure.error_description
        assert caplog.text.count("The director still offers experiment bad") == 1

        # A restarted director has forgotten it: the envoy registers again and goes on.
        await director.stop()
        director.forget_everything()
        await director.start()
        director.submit_experiment("next", archive(), ["s1"])
        await until(lambda: setup.outcome("next") is Outcome.SUCCEEDED, "the next experiment")
    assert setup.outcome("bad") is Outcome.FAILED
    assert len(director.failures) == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "no terminal to ask on"),
        (False, "declined at review"),
    ],
)
async def test_review_refusals_are_reported_and_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: bool | None, reason: str
) -> None:
    shown: list[str] = []

    async def approve(text: str) -> bool | None:
        shown.append(text)
        return answer

    async with serving(tmp_path, monkeypatch, review=True, approve=approve) as setup:
        setup.director.submit_experiment("exp-r", archive(plan="rounds_to_train: 3\n"), ["s1"])
        await until(lambda: len(setup.director.failures) == 1, "the refusal")
    (failure,) = setup.director.failures
    assert "not approved by the data owner of shard 's1'" in failure.error_description
    assert reason in failure.error_description
    assert setup.runs() == []
    assert setup.outcome("exp-r") is Outcome.REFUSED
    assert "Experiment exp-r asks to train on shard s1" in shown[0]


async def test_an_approved_review_runs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def approve(text: str) -> bool:
        return True

    async with serving(tmp_path, monkeypatch, review=True, approve=approve) as setup:
        setup.director.submit_experiment("exp-y", archive(), ["s1"])
        await until(lambda: setup.outcome("exp-y") is Outcome.SUCCEEDED, "success")
    assert len(setup.runs()) == 1


async def test_an_unsafe_archive_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch) as setup:
        setup.director.submit_experiment("slip", archive(members={"../../evil.py": b"x"}), ["s1"])
        await until(lambda: len(setup.director.failures) == 1, "the refusal")
    (failure,) = setup.director.failures
    assert "refuses the experiment's archive" in failure.error_description
    assert "'..' leaves the workspace" in failure.error_description
    assert setup.runs() == []
    assert not (tmp_path / "evil.py").exists()
    assert [p.name for p in (setup.workdir / "experiments" / "slip").iterdir()] == []


async def test_hostile_names_are_refused_and_the_envoy_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = ["nul\x00name", "../../etc", "x" * 300, "bell\x07"]
    async with serving(tmp_path, monkeypatch) as setup:
        for name in hostile:
            setup.director.submit_experiment(name, archive(), ["s1"])
            await until(lambda n=name: setup.outcome(n) is Outcome.REFUSED, "a refusal")  # type: ignore[misc]  # default binds the loop variable
            setup.director.finish_experiment(name)
        setup.director.submit_experiment("fine", archive(), ["s1"])
        await until(lambda: setup.outcome("fine") is Outcome.SUCCEEDED, "the next one")
    assert [f.experiment_name for f in setup.director.failures] == hostile
    assert all(
        "the envoy refuses an experiment name" in f.error_description
        for f in setup.director.failures
    )
    assert len(setup.runs()) == 1


async def test_stopping_the_envoy_stops_the_collaborator_and_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch, terminate_grace=5.0) as setup:
        setup.director.submit_experiment("long", archive(plan="hang: true\n"), ["s1"])
        await until(lambda: len(setup.runs()) == 1, "the collaborator to start")
    (run,) = setup.runs()
    assert (
        not Path(f"/proc/{run['pid']}").exists()
        or "Z" in Path(f"/proc/{run['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0]
    )
    (failure,) = setup.director.failures
    assert "stopped during the experiment" in failure.error_description
    assert setup.outcome("long") is Outcome.FAILED


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel of a package named tinypkg, built by hand."""
    files = {
        "tinypkg/__init__.py": b"VALUE = 42\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    path = folder / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr("tinypkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


async def test_requirements_go_into_an_environment_of_the_experiment_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    requirements = f"--no-index\n--find-links {wheels}\ntinypkg==1.0\n"
    async with serving(tmp_path, monkeypatch, install_requirements=True) as setup:
        setup.director.submit_experiment("deps", archive(requirements=requirements), ["s1"])
        await until(
            lambda: (
                setup.outcome("deps") is not None and setup.outcome("deps") is not Outcome.RUNNING
            ),
            "the experiment",
            timeout=120,
        )
    assert setup.outcome("deps") is Outcome.SUCCEEDED, setup.director.failures
    (run,) = setup.runs()
    environment = setup.workdir / "experiments" / "deps" / "env"
    assert str(run["python"]).startswith(str(environment))  # the environment's interpreter
    assert str(run["tinypkg"]).startswith(str(environment))  # installed there...
    assert importlib.util.find_spec("tinypkg") is None  # ...not into the envoy's
    assert run["shardclient"] is not None  # and the envoy's packages are still visible
    assert not environment.exists()  # removed at the end
    log = (setup.workdir / "experiments" / "deps" / "output.log").read_text()
    assert "Successfully installed tinypkg-1.0" in log  # pip's output is in the log


async def test_a_failed_install_is_reported_with_pip_s_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requirements = "--no-index\nno-such-package-shardclient-test==9.9\n"
    async with serving(tmp_path, monkeypatch, install_requirements=True,
                       keep_environment=True) as setup:  # fmt: skip
        setup.director.submit_experiment("nodeps", archive(requirements=requirements), ["s1"])
        await until(lambda: len(setup.director.failures) == 1, "the failure", timeout=120)
    (failure,) = setup.director.failures
    assert "pip install -r requirements.txt exited with 1" in failure.error_description
    assert "no-such-package-shardclient-test" in failure.error_description
    assert setup.runs() == []
    assert (setup.workdir / "experiments" / "nodeps" / "env").is_dir()  # kept when asked


async def test_an_experiment_interrupted_by_an_envoy_crash_is_reported_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the state a killed envoy left in its work directory
    (tmp_path / "work").mkdir()
    HandledExperiments(tmp_path / "work").record("crashed", Outcome.RUNNING)
    async with serving(tmp_path, monkeypatch) as setup:
        await until(lambda: len(setup.director.failures) == 1, "the report")
    (failure,) = setup.director.failures
    assert failure.experiment_name == "crashed"
    assert "restarted" in failure.error_description
    assert setup.outcome("crashed") is Outcome.FAILED


async def test_a_local_failure_fails_the_experiment_and_the_envoy_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, monkeypatch) as setup:
        long_member = {"model/" + "m" * 300 + ".py": b"x"}
        setup.director.submit_experiment("odd", archive(members=long_member), ["s1"])
        await until(lambda: len(setup.director.failures) == 1, "the refusal")
        setup.director.finish_experiment("odd")
        # a disk that fails under the envoy: an OSError the pipeline does not expect
        real_rmtree = shutil.rmtree
        monkeypatch.setattr("shardclient._envoy.experiment.shutil.rmtree", _raise_oserror)
        (setup.workdir / "experiments" / "full").mkdir(parents=True)
        setup.director.submit_experiment("full", archive(), ["s1"])
        await until(lambda: len(setup.director.failures) == 2, "the failure")
        monkeypatch.setattr("shardclient._envoy.experiment.shutil.rmtree", real_rmtree)
        setup.director.finish_experiment("full")
        setup.director.submit_experiment("fine", archive(), ["s1"])
        await until(lambda: setup.outcome("fine") is Outcome.SUCCEEDED, "the next one")
    first, second = setup.director.failures
    assert "longer than 255 bytes" in first.error_description
    assert (
        "could not handle the experiment: OSError: [Errno 28] No space" in second.error_description
    )
    assert "stopped" not in second.error_description


def _raise_oserror(*args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device")


async def test_a_director_restart_lets_the_experiment_go_and_the_next_one_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A restarted director has forgotten the experiment (its aggregator ran in the old
    process): the envoy stops the collaborator's processes, keeps the experiment as lost,
    reports nothing (the director never knew it) and takes the next experiment."""
    async with serving(tmp_path, monkeypatch) as setup:
        director = setup.director
        director.submit_experiment("long", archive(plan="hang: true\n"), ["s1"])
        await until(lambda: len(setup.runs()) == 1, "the collaborator to start")
        pid = setup.runs()[0]["pid"]
        assert isinstance(pid, int) and not gone(pid)
        await director.stop()
        director.forget_everything()
        await director.start()
        await until(lambda: setup.outcome("long") is Outcome.LOST, "the experiment let go")
        assert gone(pid)
        director.submit_experiment("next", archive(), ["s1"])
        await until(lambda: setup.outcome("next") is Outcome.SUCCEEDED, "the next experiment")
    assert director.failures == []
    entry = HandledExperiments(setup.workdir).get("long")
    assert entry is not None and "restarted during the experiment" in entry.detail
    let_go = [r for r in caplog.records if "let go" in r.getMessage()]
    assert len(let_go) == 1


async def test_a_short_outage_without_a_restart_leaves_the_experiment_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    flag = tmp_path / "finish"
    async with serving(tmp_path, monkeypatch) as setup:
        director = setup.director
        director.submit_experiment("steady", archive(plan=f"finish_when: {flag}\n"), ["s1"])
        await until(lambda: len(setup.runs()) == 1, "the collaborator to start")
        with caplog.at_level(logging.WARNING, logger="shardclient.envoy"):
            await director.stop()  # the director's process lives on: it forgets nothing
            await until(
                lambda: any("health check:" in r.getMessage() for r in caplog.records),
                "the envoy to notice the outage",
            )
            await director.start()
        flag.touch()
        await until(lambda: setup.outcome("steady") is Outcome.SUCCEEDED, "the experiment's end")
    assert director.failures == []
    assert not [r for r in caplog.records if "let go" in r.getMessage()]

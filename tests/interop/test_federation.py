"""Whole federations: a real OpenFL director and aggregator, a frontend on OpenFL's own
interactive API, and envoys of ours training a numpy model on synthetic shards."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.certs import make_pki
from tests.helpers.processes import descendants
from tests.interop.federation import HEALTH_CHECK_PERIOD_S, Envoy, Federation, federation
from tests.interop.openfl_director import HOST, OPENFL_VERSION, WITH_SHARDCLIENT, OpenflVenv
from tests.interop.test_real_director import unique

pytestmark = [pytest.mark.interop, pytest.mark.timeout(600)]

STATE_FILE = ".shardclient-envoy-state.json"
IDLE_WINDOW_S = 60.0
RETRY_BUDGET_S = 60  # RetryPolicy().total_timeout: how long one call keeps retrying


@pytest.fixture(scope="session")
def federation_venv(openfl_venv: OpenflVenv) -> OpenflVenv:
    if not WITH_SHARDCLIENT:
        pytest.skip(f"shardclient's envoy needs openfl >= 1.6 (this run: {OPENFL_VERSION})")
    return openfl_venv


def test_importing_shardclient_does_not_import_openfl(federation_venv: OpenflVenv) -> None:
    """Where openfl is installed, shardclient (the CLI included) still does not load it:
    only the collaborator child does."""
    code = "import sys, shardclient, shardclient._cli, shardclient._envoy.envoy; print(sorted(m for m in sys.modules if m.startswith('openfl')))"
    done = subprocess.run([str(federation_venv.python), "-c", code], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


def _metrics(result: dict[str, object]) -> list[dict[str, object]]:
    metrics = result["metrics"]
    assert isinstance(metrics, list)
    return metrics


def assert_trained(result: dict[str, object], envoys: list[str]) -> None:
    """The experiment ran its rounds on every envoy and the model learned."""
    assert result["status"] == "finished", result
    metrics = _metrics(result)
    rounds = {m["round"] for m in metrics}
    assert rounds == {0, 1, 2}, metrics
    trained_by = {m["metric_origin"] for m in metrics if m["task_name"] == "train"}
    assert trained_by >= set(envoys), metrics  # every collaborator contributed
    aggregated = {
        m["round"]: float(m["metric_value"])  # type: ignore[arg-type]  # JSON number
        for m in metrics
        if m["task_name"] == "aggregated_model_validate" and m["metric_origin"] == "aggregator"
    }
    # round 0 scores the initial (all-zero) model; later rounds the aggregated ones
    assert aggregated[2] > aggregated[0] + 0.3, aggregated
    assert result["trained_changed"] is True
    assert float(result["held_out_accuracy"]) > 0.9 > float(result["initial_accuracy"])  # type: ignore[arg-type]  # JSON numbers


def state(envoy: Envoy) -> dict[str, str]:
    """Experiment name -> outcome, from the envoy's state file."""
    data = json.loads((envoy.folder / "work" / STATE_FILE).read_text())
    return {item["name"]: item["outcome"] for item in data["experiments"]}


def failure_reports(fed: Federation, envoy: str) -> int:
    return fed.director_log().count(f"Collaborator {envoy} failed with error code")


def test_two_shardclient_envoys_train_an_experiment_to_completion(
    federation_venv: OpenflVenv, tmp_path: Path
) -> None:
    with federation(federation_venv, tmp_path) as fed:
        envoys = [fed.shardclient_envoy("env-a", seed=1), fed.shardclient_envoy("env-b", seed=2)]
        name = unique("train")
        result = fed.run_frontend(name, [e.name for e in envoys])
        assert_trained(result, [e.name for e in envoys])
        for envoy in envoys:
            assert state(envoy) == {name: "succeeded"}
            log = envoy.log_text()
            assert f"Experiment {name}: the collaborator finished" in log
            experiment = envoy.folder / "work" / "experiments" / name
            assert (experiment / "output.log").is_file()
            assert not (experiment / "workspace").exists()  # removed after the experiment
        assert "failed with error code" not in fed.director_log()


def test_mutual_tls_federation(federation_venv: OpenflVenv, tmp_path: Path) -> None:
    pki = make_pki(
        tmp_path / "pki", client_name="frontend", extra_clients=("env-a", "env-b"),
        server_hosts=("localhost", HOST),
    )  # fmt: skip
    with federation(federation_venv, tmp_path, pki=pki) as fed:
        envoys = [fed.shardclient_envoy("env-a", seed=1), fed.shardclient_envoy("env-b", seed=2)]
        result = fed.run_frontend(unique("tls"), [e.name for e in envoys])
        assert_trained(result, [e.name for e in envoys])


def test_review_without_a_terminal_refuses_once_and_stays_healthy(
    federation_venv: OpenflVenv, tmp_path: Path
) -> None:
    with federation(federation_venv, tmp_path) as fed:
        envoys = [
            fed.shardclient_envoy("env-a", seed=1, review_experiment=True),
            fed.shardclient_envoy("env-b", seed=2, review_experiment=True),
        ]
        name = unique("review")
        fed.run_frontend(name, [e.name for e in envoys], no_wait=True)
        for envoy in envoys:
            fed.wait_for(
                lambda e=envoy: failure_reports(fed, e.name) >= 1,  # type: ignore[misc]  # default binds the loop variable
                f"{envoy.name}'s refusal report",
            )
            fed.wait_for(
                lambda e=envoy: "not running it again" in e.log_text(),  # type: ignore[misc]  # default binds the loop variable
                f"{envoy.name} asking again",
            )
        # the envoys stay registered and online, and never review the experiment again
        assert sorted(fed.online([e.name for e in envoys])) == ["env-a", "env-b"]
        log = fed.director_log()
        assert "not approved by the data owner" in log and "no terminal" in log
        for envoy in envoys:
            assert failure_reports(fed, envoy.name) == 1
            assert state(envoy) == {name: "refused"}
            assert "Starting the collaborator" not in envoy.log_text()
            assert envoy.log_text().count("refused: Experiment") == 1


def test_failed_experiment_is_reported_once_and_the_next_one_trains_after_a_restart(
    federation_venv: OpenflVenv, tmp_path: Path
) -> None:
    with federation(federation_venv, tmp_path) as fed:
        envoys = [fed.shardclient_envoy("env-a", seed=1), fed.shardclient_envoy("env-b", seed=2)]
        failing = unique("fails")
        fed.run_frontend(failing, [e.name for e in envoys], fail=True, no_wait=True)
        for envoy in envoys:
            fed.wait_for(
                lambda e=envoy: failure_reports(fed, e.name) >= 1,  # type: ignore[misc]  # default binds the loop variable
                f"{envoy.name}'s failure report",
            )
            fed.wait_for(
                lambda e=envoy: "not running it again" in e.log_text(),  # type: ignore[misc]  # default binds the loop variable
                f"{envoy.name} noticing the failed experiment is offered again",
            )
        assert "failed on purpose" in fed.director_log()  # the error's tail reached the director

        # The director keeps offering the failed experiment; the envoys wait, idle: over a
        # minute of watching, CPU time (from /proc) stays far below a busy loop's 60 s.
        before = [envoy.cpu_seconds() for envoy in envoys]
        time.sleep(IDLE_WINDOW_S)  # the observation window, not a timing assertion
        used = [envoy.cpu_seconds() - start for envoy, start in zip(envoys, before)]
        print(f"CPU seconds of the idle envoys over {IDLE_WINDOW_S:.0f} s: {used}")
        assert all(cpu < 2.0 for cpu in used), used  # health checks every 2 s and a few asks

        # An envoy restarted meanwhile (by its supervisor) does not run it again either.
        restarted = fed.restart_envoy(envoys[0])
        fed.wait_for(
            lambda: restarted.log_text().count("not running it again") >= 2,
            "the restarted envoy to recognize the failed experiment",
        )
        for envoy in (restarted, envoys[1]):
            assert failure_reports(fed, envoy.name) == 1
            assert envoy.log_text().count(f"Experiment {failing} downloaded") == 1
            assert state(envoy) == {failing: "failed"}

        # A director restart frees the envoys; the next experiment trains.
        fed.director.stop()
        fed.director.start()
        result = fed.run_frontend(unique("after"), ["env-a", "env-b"])
        assert_trained(result, ["env-a", "env-b"])


def test_openfl_envoy_on_our_client_trains_after_director_restarts(
    federation_venv: OpenflVenv, tmp_path: Path
) -> None:
    """OpenFL's own Envoy, with shardclient's client swapped in: across a short outage and
    one longer than the client's retry budget, its health thread lives on (our client hands
    it a delay during the outage and, once the director is back, a ShardNotFoundError that
    OpenFL's except clause catches), so both envoys re-register and train again."""
    with federation(federation_venv, tmp_path) as fed:
        envoys = [fed.openfl_envoy("ofl-a", seed=1), fed.openfl_envoy("ofl-b", seed=2)]
        names = [e.name for e in envoys]
        for outage in (3 * HEALTH_CHECK_PERIOD_S, RETRY_BUDGET_S + 10):
            registered = fed.director_log().count("Director accepted shard for")

            def registered_again(before: int = registered) -> bool:
                return fed.director_log().count("Director accepted shard for") >= before + 2

            fed.director.stop()
            time.sleep(outage)  # the outage itself, not a timing assertion
            fed.director.start()
            fed.wait_for(registered_again, "both envoys to register again")
            result = fed.run_frontend(unique("after-outage"), names)
            assert_trained(result, names)
        for envoy in envoys:
            assert envoy.process.poll() is None
            # (OpenFL's own main loop logs each failed WaitExperiment with a traceback; ours
            # logs an outage once: at most once per outage)
            assert envoy.log_text().count("Health check failed") <= 2


def test_a_director_restart_while_envoys_train_lets_the_experiment_go(
    federation_venv: OpenflVenv, tmp_path: Path
) -> None:
    """The director (and its aggregator) is killed and started again on the same port while
    two shardclient envoys train: the restarted director knows neither them nor the
    experiment. Within two minutes no process is left under either envoy, each keeps the
    experiment as lost, and the next experiment trains."""
    with federation(federation_venv, tmp_path) as fed:
        envoys = [fed.shardclient_envoy("env-a", seed=1), fed.shardclient_envoy("env-b", seed=2)]
        names = [e.name for e in envoys]
        interrupted = unique("interrupted")
        fed.run_frontend(interrupted, names, no_wait=True)
        for envoy in envoys:
            fed.wait_for(
                lambda e=envoy: (
                    "Starting the collaborator" in e.log_text()  # type: ignore[misc]  # default binds the loop variable
                    and bool(descendants(e.process.pid))
                ),
                f"{envoy.name}'s collaborator to start",
            )
        fed.director.stop()
        fed.director.start()
        restarted = time.monotonic()
        fed.wait_for(
            lambda: all(not descendants(e.process.pid) for e in envoys),
            "no process left under the envoys",
            timeout=120,
        )
        print(f"collaborators gone {time.monotonic() - restarted:.1f} s after the restart")
        fed.wait_for(
            lambda: all(state(e) == {interrupted: "lost"} for e in envoys),
            "the envoys to keep the experiment as lost",
        )
        fed.wait_for(  # the log's writer thread may lag the state file a moment
            lambda: all(e.log_text().count("let go") == 1 for e in envoys),
            "one line from each envoy saying it let the experiment go",
        )
        for envoy in envoys:
            assert failure_reports(fed, envoy.name) == 0
        result = fed.run_frontend(unique("after-restart"), names)
        assert_trained(result, names)


def test_a_short_outage_without_a_restart_leaves_the_experiment_running(
    federation_venv: OpenflVenv, tmp_path: Path
) -> None:
    """The director's process is frozen for a few health periods (a hiccup, a stalled
    network: it forgets nothing) while the envoys train: the experiment runs to its end."""
    with federation(federation_venv, tmp_path) as fed:
        envoys = [fed.shardclient_envoy("env-a", seed=1), fed.shardclient_envoy("env-b", seed=2)]
        names = [e.name for e in envoys]
        outcome: list[dict[str, object]] = []
        frontend = threading.Thread(
            target=lambda: outcome.append(fed.run_frontend(unique("steady"), names))
        )
        frontend.start()
        try:
            for envoy in envoys:
                fed.wait_for(
                    lambda e=envoy: "Starting the collaborator" in e.log_text(),  # type: ignore[misc]  # default binds the loop variable
                    f"{envoy.name}'s collaborator to start",
                )
            fed.director.pause()
            time.sleep(3 * HEALTH_CHECK_PERIOD_S)  # the outage itself, not a timing assertion
            fed.director.resume()
        finally:
            frontend.join(timeout=300)
        (result,) = outcome
        assert_trained(result, names)
        for envoy in envoys:
            assert "let go" not in envoy.log_text()
            assert set(state(envoy).values()) == {"succeeded"}

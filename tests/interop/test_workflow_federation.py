"""Whole OpenFL 1.9 (Workflow API) federations: a real 1.9 director and aggregator, a
FederatedRuntime notebook run headless, and envoys of ours (``shardclient run``) or OpenFL
1.9's own Envoy on shardclient's EnvoyDirectorClient, training a numpy FedAvg flow on private
attributes."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.certs import make_pki
from tests.helpers.processes import descendants
from tests.interop.federation import Envoy, one_line
from tests.interop.openfl_director import OpenflVenv
from tests.interop.workflow_federation import (
    ROUNDS,
    WorkflowFederation,
    workflow_federation,
)

pytestmark = [pytest.mark.interop]

ENVOYS = ("Portland", "Seattle")
STATE_FILE = ".shardclient-envoy-state.json"
FLOW = "NumpyFedAvgFlow"  # the experiment is named after the flow class
# The outage outlasts the retry budget the OpenFL envoys' client gets (openfl_envoy.py
# --retry-total), so that calls fail during it; the default budget (RetryPolicy's 60 s
# total_timeout) would make the test a minute longer.
RETRY_BUDGET_S = 10.0
OUTAGE_S = RETRY_BUDGET_S + 8


def _history(result: dict[str, object]) -> list[dict[str, object]]:
    history = result["history"]
    assert isinstance(history, list)
    return history


def assert_trained(result: dict[str, object], envoys: tuple[str, ...]) -> None:
    """The flow ran to its end, every round on every envoy, each on its own private data."""
    assert result["finished"] is True, result
    history = _history(result)
    assert [entry["round"] for entry in history] == list(range(ROUNDS)), history
    for entry in history:
        assert entry["collaborators"] == sorted(envoys), entry
        assert entry["trained_on"] == sorted(envoys), entry  # shard_name, a private attribute
    weights = result["weights"]
    assert isinstance(weights, list)
    assert abs(weights[2] - 3.0) < 1.0, weights  # on its way to the true weights (1,-2,3,.5)


def train_ancestors(result: dict[str, object], envoy: str) -> list[list[int]]:
    """Per round, the pid of the process the envoy's train step ran in, then its ancestors'
    (read from /proc by the step itself, while the process ran)."""
    found = []
    for entry in _history(result):
        chains = entry["train_ancestors"]
        assert isinstance(chains, dict)
        found.append([int(pid) for pid in chains[envoy]])
    return found


def assert_trained_in_workspace(result: dict[str, object], envoy: Envoy) -> None:
    """The train steps ran in ``<envoy folder>/<envoy>_<experiment>``, as under fx."""
    for entry in _history(result):
        cwds = entry["train_cwds"]
        assert isinstance(cwds, dict)
        assert Path(cwds[envoy.name]) == envoy.folder / f"{envoy.name}_{FLOW}", cwds


def assert_trained_in_children(
    fed: WorkflowFederation, result: dict[str, object], envoys: list[Envoy]
) -> None:
    """Our envoys run OpenFL's collaborator in a child process: the train steps ran in a
    process below the envoy's, not in the envoy (nor in the director)."""
    assert result["aggregator_pid"] == fed.director.pid  # start/join/end ran there
    for envoy in envoys:
        for chain in train_ancestors(result, envoy.name):
            assert chain[0] not in (envoy.process.pid, fed.director.pid), chain
            assert envoy.process.pid in chain[1:], (envoy.process.pid, chain)
        assert_trained_in_workspace(result, envoy)


def state(envoy: Envoy) -> dict[str, str]:
    """Experiment name -> outcome, from the envoy's state file."""
    path = envoy.folder / STATE_FILE
    data = json.loads(path.read_text()) if path.exists() else {"experiments": []}
    return {item["name"]: item["outcome"] for item in data["experiments"]}


def assert_shardclient_envoys_ran(fed: WorkflowFederation, envoys: list[Envoy]) -> None:
    """Each envoy found an OpenFL 1.9 director, its collaborator ran to the end of the
    federation, and it recorded the experiment and removed its workspace."""
    for envoy in envoys:
        assert f"{envoy.name} registered with the OpenFL 1.9 director" in envoy.log_text()
        workspace = envoy.folder / f"{envoy.name}_{FLOW}"
        fed.wait_for(
            lambda e=envoy, w=workspace: state(e) == {FLOW: "succeeded"} and not w.exists(),  # type: ignore[misc]  # defaults bind the loop variables
            f"{envoy.name} to record {FLOW} as succeeded and remove its workspace",
        )
        fed.wait_for(  # the log's writer thread may lag the state file a moment
            lambda e=envoy: e.log_text().count("End of Federation reached") == 1,  # type: ignore[misc]  # default binds the loop variable
            f"{envoy.name}'s collaborator's last line in its log",
        )


@pytest.mark.timeout(600)
def test_two_shardclient_envoys_run_a_flow(workflow_venv: OpenflVenv, tmp_path: Path) -> None:
    with workflow_federation(workflow_venv, tmp_path) as fed:
        envoys = [
            fed.shardclient_envoy("Portland", seed=1),
            fed.shardclient_envoy("Seattle", seed=2, callable_func=True),
        ]
        fed.wait_connected(ENVOYS)
        result = fed.run_flow(ENVOYS)
        assert_trained(result, ENVOYS)
        assert_trained_in_children(fed, result, envoys)
        assert_shardclient_envoys_ran(fed, envoys)


@pytest.mark.timeout(600)
def test_two_shardclient_envoys_run_a_flow_with_mutual_tls(
    workflow_venv: OpenflVenv, tmp_path: Path
) -> None:
    """The director with TLS and client certificates; each envoy's certificate names it (the
    aggregator checks CN == collaborator name), the frontend's is ``frontend``."""
    pki = make_pki(tmp_path / "pki", client_name="frontend", extra_clients=ENVOYS)
    with workflow_federation(workflow_venv, tmp_path, pki=pki) as fed:
        envoys = [
            fed.shardclient_envoy("Portland", seed=1),
            fed.shardclient_envoy("Seattle", seed=2, callable_func=True),
        ]
        fed.wait_connected(ENVOYS)
        result = fed.run_flow(ENVOYS)
        assert_trained(result, ENVOYS)
        assert_trained_in_children(fed, result, envoys)
        assert_shardclient_envoys_ran(fed, envoys)


@pytest.mark.timeout(600)
def test_openfl_1_9_envoy_on_our_client_trains_and_survives_a_director_restart(
    workflow_venv: OpenflVenv, tmp_path: Path
) -> None:
    """OpenFL 1.9's own Envoy with shardclient's EnvoyDirectorClient swapped in: it trains;
    through an outage longer than the client's retry budget its threads live on (our client
    hands the heartbeat a delay instead of OpenFL's None, which kills OpenFL's heartbeat
    thread; WaitExperiment fails and OpenFL's loop retries it), and once the director is back
    (knowing no envoy) the heartbeat's EnvoyNotFoundError makes it connect again, and the
    next flow trains on both."""
    with workflow_federation(workflow_venv, tmp_path) as fed:
        envoys = [
            fed.openfl_envoy("Portland", seed=1, retry_total=RETRY_BUDGET_S),
            fed.openfl_envoy("Seattle", seed=2, callable_func=True, retry_total=RETRY_BUDGET_S),
        ]
        fed.wait_connected(ENVOYS)
        result = fed.run_flow(ENVOYS)
        assert_trained(result, ENVOYS)
        for envoy in envoys:  # OpenFL's Envoy runs the collaborator in its own process
            assert {chain[0] for chain in train_ancestors(result, envoy.name)} == {
                envoy.process.pid
            }
            assert_trained_in_workspace(result, envoy)

        connected = {name: fed.connections(name) for name in ENVOYS}
        fed.director.stop()
        time.sleep(OUTAGE_S)  # the outage itself, not a timing assertion
        fed.director.start()
        fed.wait_connected(ENVOYS, before=connected)
        address = f"localhost:{fed.director.port}"
        for envoy in envoys:
            log = one_line(envoy.log_text())
            # The outage outlasted the retry budget: a WaitExperiment and the health checks
            # failed for good (OpenFL's loop logged the one and retried; our client logged
            # the others once and handed OpenFL's heartbeat thread a delay), and the living
            # heartbeat thread connected again on the restarted director's NOT_FOUND.
            assert (
                f"Failed to get experiment: WaitExperiment (OpenFL 1.9): cannot reach the "
                f"director at {address}" in log
            ), log[-3000:]
            assert f"Health checks to {address}: failed" in log, log[-3000:]
            assert "The director has lost information about current envoy. Reconnecting" in log
            assert envoy.process.poll() is None

        result = fed.run_flow(ENVOYS)
        assert_trained(result, ENVOYS)
        for envoy in envoys:
            assert {chain[0] for chain in train_ancestors(result, envoy.name)} == {
                envoy.process.pid
            }
            fed.wait_for(
                lambda e=envoy: e.log_text().count("End of Federation reached") == 2,  # type: ignore[misc]  # default binds the loop variable
                f"{envoy.name}'s collaborator to end the second flow",
            )


@pytest.mark.timeout(600)
def test_a_director_restart_while_shardclient_envoys_train_lets_the_flow_go(
    workflow_venv: OpenflVenv, tmp_path: Path
) -> None:
    """The 1.9 director (with the flow's aggregator) is killed and started again on the same
    port while two shardclient envoys train: within two minutes no process is left under
    either envoy, each keeps the flow as lost, and the next run of the same flow (the same
    experiment name) trains."""
    with workflow_federation(workflow_venv, tmp_path) as fed:
        envoys = [
            fed.shardclient_envoy("Portland", seed=1),
            fed.shardclient_envoy("Seattle", seed=2, callable_func=True),
        ]
        fed.wait_connected(ENVOYS)
        interrupted = threading.Thread(target=_ignoring_failure(lambda: fed.run_flow(ENVOYS)))
        interrupted.start()
        try:
            for envoy in envoys:
                fed.wait_for(
                    lambda e=envoy: (
                        "Starting the collaborator" in e.log_text()  # type: ignore[misc]  # default binds the loop variable
                        and bool(descendants(e.process.pid))
                    ),
                    f"{envoy.name}'s collaborator to start",
                )
            connected = {name: fed.connections(name) for name in ENVOYS}
            fed.director.stop()
            fed.director.start()
            fed.wait_for(
                lambda: all(not descendants(e.process.pid) for e in envoys),
                "no process left under the envoys",
                timeout=120,
            )
        finally:
            interrupted.join(timeout=240)  # its director is gone: the frontend fails
        fed.wait_for(
            lambda: all(state(e) == {FLOW: "lost"} for e in envoys),
            "the envoys to keep the flow as lost",
        )
        fed.wait_for(  # the log's writer thread may lag the state file a moment
            lambda: all(e.log_text().count("let go") == 1 for e in envoys),
            "one line from each envoy saying it let the flow go",
        )
        fed.wait_connected(ENVOYS, before=connected)
        result = fed.run_flow(ENVOYS)
        assert_trained(result, ENVOYS)
        assert_shardclient_envoys_ran(fed, envoys)


def _ignoring_failure(run: Callable[[], object]) -> Callable[[], None]:
    def call() -> None:
        with contextlib.suppress(AssertionError):  # the frontend of a flow cut short fails
            run()

    return call

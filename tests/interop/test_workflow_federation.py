"""Whole OpenFL 1.9 (Workflow API) federations: a real 1.9 director and aggregator, a
FederatedRuntime notebook run headless, and envoys of ours (``shardclient run``) or OpenFL
1.9's own Envoy on shardclient's EnvoyDirectorClient, training a numpy FedAvg flow on private
attributes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.certs import make_pki
from tests.interop.federation import Envoy
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


def assert_trained_in_children(
    fed: WorkflowFederation, result: dict[str, object], envoys: list[Envoy]
) -> None:
    """Our envoys run OpenFL's collaborator in a child process: the train steps ran in a
    process below the envoy's, not in the envoy (nor in the director)."""
    assert result["aggregator_pid"] == fed.director.pid
    for envoy in envoys:
        for chain in train_ancestors(result, envoy.name):
            assert chain[0] not in (envoy.process.pid, fed.director.pid), chain
            assert envoy.process.pid in chain[1:], (envoy.process.pid, chain)


def assert_envoys_ran(envoys: list[Envoy], flows: int) -> None:
    for envoy in envoys:
        log = envoy.log_text()
        assert f"{envoy.name} registered with the OpenFL 1.9 director" in log, log[-3000:]
        assert log.count("End of Federation reached") == flows, log[-3000:]
        assert f"{FLOW}" in (envoy.folder / STATE_FILE).read_text()
        # the workspace (<envoy>_<experiment>, as under fx) is removed after the experiment
        assert not (envoy.folder / f"{envoy.name}_{FLOW}").exists()


@pytest.mark.timeout(400)
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
        assert_envoys_ran(envoys, flows=1)


@pytest.mark.timeout(400)
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
        assert_envoys_ran(envoys, flows=1)


@pytest.mark.timeout(400)
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

        connected = {name: fed.connections(name) for name in ENVOYS}
        failures = [envoy.log_text().count("Failed to get experiment") for envoy in envoys]
        fed.director.stop()
        time.sleep(OUTAGE_S)  # the outage itself, not a timing assertion
        fed.director.start()
        fed.wait_connected(ENVOYS, before=connected)
        for envoy, before in zip(envoys, failures):
            # the outage outlasted the budget: WaitExperiment failed (OpenFL's loop logs it)
            assert envoy.log_text().count("Failed to get experiment") > before, envoy.name
            assert envoy.process.poll() is None

        result = fed.run_flow(ENVOYS)
        assert_trained(result, ENVOYS)
        for envoy in envoys:
            assert envoy.log_text().count("End of Federation reached") == 2

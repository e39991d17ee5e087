"""The sync EnvoyDirectorClient (OpenFL 1.9's drop-in) against a LocalWorkflowDirector."""

from __future__ import annotations

import inspect
import logging
import sys
import types
from collections.abc import Iterator

import pytest

from shardclient import EnvoyDirectorClient, EnvoyNotFoundError, RetryPolicy
from shardclient.testing import LocalWorkflowDirector
from tests.helpers.director import PERIOD


@pytest.fixture
def local() -> Iterator[LocalWorkflowDirector]:
    with LocalWorkflowDirector(health_check_period=PERIOD) as director:
        yield director


@pytest.fixture
def client(local: LocalWorkflowDirector) -> Iterator[EnvoyDirectorClient]:
    with EnvoyDirectorClient(
        director_host=local.host, director_port=local.port, envoy_name="Portland"
    ) as sync_client:
        yield sync_client


def test_signature_matches_openfl_1_9() -> None:
    """OpenFL 1.9's EnvoyDirectorClient: keyword-only, tls off by default, the same calls."""
    params = inspect.signature(EnvoyDirectorClient.__init__).parameters
    names = ["director_host", "director_port", "envoy_name", "tls"]
    names += ["root_certificate", "private_key", "certificate"]
    for name in names:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["envoy_name"].default is None and params["tls"].default is False
    health = inspect.signature(EnvoyDirectorClient.send_health_check).parameters
    assert [n for n in health if n != "self"][:2] == ["envoy_name", "is_experiment_running"]
    assert all(health[n].kind is inspect.Parameter.KEYWORD_ONLY for n in list(health)[1:])
    connect = inspect.signature(EnvoyDirectorClient.connect_envoy).parameters
    assert list(connect) == ["self", "envoy_name"]
    assert list(inspect.signature(EnvoyDirectorClient.get_experiment_data).parameters) == [
        "self",
        "experiment_name",
    ]


def test_the_envoy_cycle(client: EnvoyDirectorClient, local: LocalWorkflowDirector) -> None:
    assert client.connect_envoy(envoy_name="Portland")
    assert client.send_health_check(envoy_name="Portland", is_experiment_running=False) == PERIOD
    local.submit_experiment("Flow", b"archive" * 1000, ["Portland"])
    assert client.wait_experiment() == "Flow"
    chunks = list(client.get_experiment_data("Flow"))
    assert b"".join(chunk.exp_data for chunk in chunks) == b"archive" * 1000
    assert all(chunk.size == len(chunk.exp_data) for chunk in chunks)


def test_envoy_not_found_is_caught_by_openfl_1_9_s_except_clause(
    client: EnvoyDirectorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where OpenFL 1.9's exceptions module is loaded (always, where its Envoy runs), the
    error is also its EnvoyNotFoundError, on which its heartbeat thread connects again."""
    module = "openfl.experimental.workflow.transport.grpc.exceptions"
    openfl_exceptions = types.ModuleType(module)

    class OpenflEnvoyNotFoundError(Exception):
        pass

    openfl_exceptions.EnvoyNotFoundError = OpenflEnvoyNotFoundError  # type: ignore[attr-defined]  # a stand-in module
    with pytest.raises(EnvoyNotFoundError) as plain:
        client.send_health_check(envoy_name="Portland", is_experiment_running=False)
    assert not isinstance(plain.value, OpenflEnvoyNotFoundError)
    monkeypatch.setitem(sys.modules, module, openfl_exceptions)
    with pytest.raises(OpenflEnvoyNotFoundError) as caught:
        client.send_health_check(envoy_name="Portland", is_experiment_running=False)
    assert isinstance(caught.value, EnvoyNotFoundError)
    assert type(caught.value).__name__ == "EnvoyNotFoundError"


def test_health_checks_live_through_an_outage_as_openfl_1_9_s_heartbeat_needs(
    local: LocalWorkflowDirector, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenFL 1.9's heartbeat thread sleeps what send_health_check returns and catches only
    EnvoyNotFoundError (its own client returns None, and the thread dies): an outage must
    give it a delay, and the restarted director an EnvoyNotFoundError to connect again on."""
    policy = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.01, jitter=0)
    with (
        EnvoyDirectorClient(
            director_host=local.host, director_port=local.port, envoy_name="e", retry=policy
        ) as client,
        caplog.at_level(logging.WARNING, logger="shardclient"),
    ):
        client.connect_envoy("e")
        assert client.send_health_check(envoy_name="e", is_experiment_running=False) == PERIOD
        local.stop_sync()
        for _ in range(3):
            assert client.send_health_check(envoy_name="e", is_experiment_running=False) == PERIOD
        local.forget_envoys()
        local.start_sync()
        with pytest.raises(EnvoyNotFoundError):
            client.send_health_check(envoy_name="e", is_experiment_running=False)
        assert client.connect_envoy("e")
        assert client.send_health_check(envoy_name="e", is_experiment_running=False) == PERIOD
    outage = [r for r in caplog.records if "once per outage" in r.getMessage()]
    assert len(outage) == 1 and "UpdateEnvoyStatus (OpenFL 1.9)" in outage[0].getMessage()
    assert any("reach the director again" in r.getMessage() for r in caplog.records)

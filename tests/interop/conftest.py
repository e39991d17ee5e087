"""Session fixtures: the openfl venv, and the real director without and with mutual TLS;
the OpenFL 1.9 venv for the Workflow-API tests.

Each director is started once per run on a free loopback port, and stopped and reaped
whatever the outcome. A registry that cannot be reached skips the tests; any other
failure to install or start fails them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.certs import make_pki
from tests.interop.openfl_director import (
    HOST,
    TLS_ENVOY_NAME,
    EnvoyCerts,
    OpenflVenv,
    RegistryUnreachable,
    RunningDirector,
    ensure_openfl_venv,
    ensure_workflow_venv,
    run_director,
)


@pytest.fixture(scope="session")
def openfl_venv() -> OpenflVenv:
    """The venv with openfl 1.6 (created, or reused when its ready-marker fits)."""
    try:
        return ensure_openfl_venv()
    except RegistryUnreachable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def workflow_venv() -> OpenflVenv:
    """The venv with openfl 1.9 and shardclient's ``workflow`` extra (created, or reused when
    its ready-marker fits)."""
    try:
        return ensure_workflow_venv()
    except RegistryUnreachable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def director(
    openfl_venv: OpenflVenv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDirector]:
    """The real director without TLS."""
    yield from run_director(openfl_venv, tmp_path_factory.mktemp("director"))


@pytest.fixture(scope="session")
def tls_director(
    openfl_venv: OpenflVenv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDirector]:
    """The real director with mutual TLS, from a CA, director and envoy certificate made here."""
    workdir = tmp_path_factory.mktemp("tls-director")
    pki = make_pki(workdir / "pki", client_name=TLS_ENVOY_NAME, server_hosts=("localhost", HOST))
    certs = EnvoyCerts(
        root_certificate=pki.ca_cert,
        private_key=pki.client.key,
        certificate=pki.client.cert,
        common_name=TLS_ENVOY_NAME,
    )
    yield from run_director(
        openfl_venv, workdir, certs, server_key=pki.server.key, server_cert=pki.server.cert
    )

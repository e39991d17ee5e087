"""Our clients against the real OpenFL 1.6 director, with and without mutual TLS."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from grpclib.const import Status

from shardclient import (
    AsyncShardDirectorClient,
    DirectorRPCError,
    DirectorUnavailableError,
    RetryPolicy,
    ShardDirectorClient,
    ShardNotFoundError,
    StaticShardDescriptor,
    TLSHandshakeError,
)
from shardclient.messages import CudaDeviceInfo
from tests.helpers.certs import make_pki
from tests.interop.openfl_director import RunningDirector, submit_experiment

# Installing openfl and a first start take minutes, and count against the first test.
pytestmark = [pytest.mark.interop, pytest.mark.timeout(600)]

CHUNK = 2 * 1024 * 1024  # the director streams the archive in messages of up to 2 MiB
ARCHIVE_SIZE = 2 * CHUNK + 12345  # several chunks, the last one shorter
# The director's experiment loop polls every 10 s; this bounds waiting for a queued one.
WAIT_EXPERIMENT_DEADLINE_S = 60.0


@pytest.fixture(scope="session", params=["plain", "tls"])
def any_director(request: pytest.FixtureRequest) -> RunningDirector:
    name = "director" if request.param == "plain" else "tls_director"
    running: RunningDirector = request.getfixturevalue(name)
    return running


def _connection(director: RunningDirector, shard_name: str) -> dict[str, Any]:
    """Constructor arguments for either client: plain, or the envoy's mTLS files."""
    arguments: dict[str, Any] = {
        "director_host": director.host,
        "director_port": director.port,
        "shard_name": shard_name,
        "tls": director.certs is not None,
    }
    if director.certs is not None:
        arguments["root_certificate"] = director.certs.root_certificate
        arguments["private_key"] = director.certs.private_key
        arguments["certificate"] = director.certs.certificate
    return arguments


def sync_client(director: RunningDirector, shard_name: str) -> ShardDirectorClient:
    return ShardDirectorClient(**_connection(director, shard_name))


def async_client(director: RunningDirector, shard_name: str) -> AsyncShardDirectorClient:
    return AsyncShardDirectorClient(**_connection(director, shard_name))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def matching_descriptor() -> StaticShardDescriptor:
    # int shapes: the client must send them as the strings the director compares.
    return StaticShardDescriptor(sample_shape=[28, 28], target_shape=[1], dataset_description="x")


def gpu(index: int) -> CudaDeviceInfo:
    return CudaDeviceInfo(
        index=index,
        memory_total=80 * 2**30,
        memory_utilized=2**30,
        device_utilization="7%",
        cuda_driver_version="580.159.04",
        cuda_version="13.0",
        name="NVIDIA H100",
    )


@dataclass(frozen=True)
class SubmittedExperiment:
    director: RunningDirector
    name: str
    sync_collaborator: str
    async_collaborator: str
    archive: Path
    sha256: str


@pytest.fixture(scope="session")
def experiment(
    any_director: RunningDirector, tmp_path_factory: pytest.TempPathFactory
) -> SubmittedExperiment:
    """One experiment per director, submitted through openfl's own frontend client.

    The archive is not a zip file: the director's aggregator then fails to start (so it
    never starts, and the archive is kept for download), which the transfer ignores.
    """
    data = os.urandom(ARCHIVE_SIZE).replace(b"PK\x05\x06", b"pk\x05\x06")
    archive = tmp_path_factory.mktemp("experiment") / "archive.bin"
    archive.write_bytes(data)
    submitted = SubmittedExperiment(
        director=any_director,
        name=unique("exp"),
        sync_collaborator=unique("col-sync"),
        async_collaborator=unique("col-async"),
        archive=archive,
        sha256=hashlib.sha256(data).hexdigest(),
    )
    submit_experiment(
        any_director,
        name=submitted.name,
        collaborators=[submitted.sync_collaborator, submitted.async_collaborator],
        archive=archive,
    )
    return submitted


# --- registration ------------------------------------------------------------------------


def test_registration_accepted_with_matching_int_and_str_shapes(
    any_director: RunningDirector,
) -> None:
    str_shapes = StaticShardDescriptor(
        sample_shape=["28", "28"], target_shape=["1"], dataset_description="strings"
    )
    with sync_client(any_director, unique("s")) as client:
        assert client.report_shard_info(matching_descriptor(), cuda_devices=[0]) is True
        assert client.report_shard_info(str_shapes, cuda_devices=[]) is True


@pytest.mark.parametrize(
    ("sample_shape", "target_shape"),
    [([28, 29], [1]), ([28, 28], [2]), ([28], [1]), ([28, 28, 1], [1])],
)
def test_registration_refused_with_other_shapes(
    any_director: RunningDirector, sample_shape: list[int], target_shape: list[int]
) -> None:
    descriptor = StaticShardDescriptor(sample_shape=sample_shape, target_shape=target_shape)
    with sync_client(any_director, unique("s")) as client:
        assert client.report_shard_info(descriptor, cuda_devices=[0]) is False


# --- health checks -----------------------------------------------------------------------


def test_health_check_returns_configured_period_with_cuda_devices(
    any_director: RunningDirector,
) -> None:
    name = unique("s")
    with sync_client(any_director, name) as client:
        # The director stores readings by position into the registered devices.
        assert client.report_shard_info(matching_descriptor(), cuda_devices=[0, 1]) is True
        period = client.send_health_check(
            envoy_name=name, is_experiment_running=False, cuda_devices_info=[gpu(0), gpu(1)]
        )
        assert period == any_director.health_check_period
        period = client.send_health_check(envoy_name=name, is_experiment_running=True)
        assert period == any_director.health_check_period


def test_health_check_from_unregistered_shard_raises_shard_not_found(
    any_director: RunningDirector,
) -> None:
    name = unique("never-registered")
    with sync_client(any_director, name) as client, pytest.raises(ShardNotFoundError) as caught:
        client.send_health_check(envoy_name=name, is_experiment_running=False)
    assert caught.value.shard_name == name
    assert f"Unknown shard {name}" in str(caught.value)


# Not a unit test's business to pick a loop: tests/conftest.py pins anyio to asyncio.
@pytest.mark.anyio
async def test_async_client_registers_and_health_checks(any_director: RunningDirector) -> None:
    name = unique("s-async")
    async with async_client(any_director, name) as client:
        assert await client.report_shard_info(matching_descriptor(), cuda_devices=[0]) is True
        refused = StaticShardDescriptor(sample_shape=[1], target_shape=[1])
        assert await client.report_shard_info(refused, cuda_devices=[0]) is False
        period = await client.send_health_check(
            envoy_name=name, is_experiment_running=False, cuda_devices_info=[gpu(0)]
        )
        assert period == any_director.health_check_period
        with pytest.raises(ShardNotFoundError):
            await client.send_health_check(
                envoy_name=unique("never-registered"), is_experiment_running=False
            )


# --- experiments -------------------------------------------------------------------------


def test_wait_experiment_returns_experiment_submitted_by_openfl_frontend(
    experiment: SubmittedExperiment,
) -> None:
    result: list[str | BaseException] = []
    client = sync_client(experiment.director, experiment.sync_collaborator)

    def wait() -> None:
        try:
            result.append(client.wait_experiment())
        except BaseException as exc:  # handed to the test thread below
            result.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    try:
        waiter.start()
        waiter.join(WAIT_EXPERIMENT_DEADLINE_S)
    finally:
        client.close()  # ends a wait still blocked in the thread
        waiter.join(10)
    assert result, f"wait_experiment got nothing in {WAIT_EXPERIMENT_DEADLINE_S} s"
    assert result[0] == experiment.name


@pytest.mark.anyio
async def test_async_wait_experiment_returns_submitted_experiment(
    experiment: SubmittedExperiment,
) -> None:
    async with async_client(experiment.director, experiment.async_collaborator) as client:
        with anyio.fail_after(WAIT_EXPERIMENT_DEADLINE_S):
            assert await client.wait_experiment() == experiment.name


def test_download_is_byte_identical_to_submitted_archive(
    experiment: SubmittedExperiment,
) -> None:
    digest = hashlib.sha256()
    sizes: list[int] = []
    with sync_client(experiment.director, experiment.sync_collaborator) as client:
        for chunk in client.get_experiment_data(experiment.name):
            assert chunk.size == len(chunk.npbytes)
            sizes.append(chunk.size)
            digest.update(chunk.npbytes)
    assert sizes == [CHUNK, CHUNK, ARCHIVE_SIZE - 2 * CHUNK]
    assert digest.hexdigest() == experiment.sha256


@pytest.mark.anyio
async def test_async_download_is_byte_identical(experiment: SubmittedExperiment) -> None:
    digest = hashlib.sha256()
    total = 0
    async with async_client(experiment.director, experiment.async_collaborator) as client:
        async for chunk in client.get_experiment_data(experiment.name):
            total += len(chunk.npbytes)
            digest.update(chunk.npbytes)
    assert total == ARCHIVE_SIZE
    assert digest.hexdigest() == experiment.sha256


def test_set_experiment_failed_as_the_director_answers(experiment: SubmittedExperiment) -> None:
    """Without TLS the caller is the default client id, so the 1.6 director acts, and fails
    (UNKNOWN) on an experiment whose aggregator never started; with TLS the caller is the
    envoy certificate's CN and the director ignores the call (success)."""
    with sync_client(experiment.director, experiment.sync_collaborator) as client:
        if experiment.director.tls:
            client.set_experiment_failed(experiment.name, error_code=1, error_description="x")
        else:
            with pytest.raises(DirectorRPCError) as caught:
                client.set_experiment_failed(experiment.name, error_code=1, error_description="x")
            assert caught.value.status is Status.UNKNOWN


def test_set_experiment_failed_for_unknown_experiment_succeeds(
    any_director: RunningDirector,
) -> None:
    name = unique("s")
    with sync_client(any_director, name) as client:
        client.set_experiment_failed(unique("no-such-experiment"))


def test_tls_failures_say_why(
    tls_director: RunningDirector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real (C-core) director with mutual TLS. A client trusting another CA gets OpenSSL's
    verification reason at once. A client whose certificate the director does not trust sees
    the connection closed right after the TLS 1.3 handshake, with no alert: retried (a TLS
    proxy without a backend looks the same), each line saying the certificate was most likely
    refused."""
    assert tls_director.certs is not None
    other = make_pki(tmp_path / "other", client_name="stranger", ca_name="another CA")
    address = f"{tls_director.host}:{tls_director.port}"
    quick = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.01)

    arguments = {**_connection(tls_director, unique("tls")), "root_certificate": other.ca_cert}
    with caplog.at_level("WARNING"), ShardDirectorClient(**arguments, retry=quick) as client:
        with pytest.raises(
            TLSHandshakeError,
            match=r"the director's certificate did not verify: .*; is root_certificate \(-rc\)",
        ):
            client.report_shard_info(matching_descriptor(), [])
    assert "attempt 1 of" not in caplog.text  # refused at once, not retried

    caplog.clear()
    arguments = {
        **_connection(tls_director, unique("tls")),
        "private_key": other.client.key, "certificate": other.client.cert,
    }  # fmt: skip
    with caplog.at_level("WARNING"), ShardDirectorClient(**arguments, retry=quick) as client:
        with pytest.raises(DirectorUnavailableError) as caught:
            client.report_shard_info(matching_descriptor(), [])
    assert f"the director at {address} closed the TLS connection right after the handshake" in str(
        caught.value
    )
    assert "most likely it rejected this envoy's certificate" in str(caught.value)
    assert caplog.text.count("most likely it rejected this envoy's certificate") == 1


def test_tls_on_one_side_only_is_named_both_ways(
    director: RunningDirector, tls_director: RunningDirector, caplog: pytest.LogCaptureFixture
) -> None:
    """The real (C-core) directors, with the default options: a plain-text client of the TLS
    director (which closes the connection at the first byte that is not TLS) and a TLS client
    of the plain-text director each get one error naming which side speaks what, at once and
    without a retry."""
    plain = {**_connection(tls_director, unique("plain")), "tls": False}
    for name in ("root_certificate", "private_key", "certificate"):
        plain.pop(name)
    with caplog.at_level("WARNING"), ShardDirectorClient(**plain) as client:
        with pytest.raises(TLSHandshakeError) as speaks_tls:
            client.report_shard_info(matching_descriptor(), [])
    address = f"{tls_director.host}:{tls_director.port}"
    assert f"the director at {address} speaks TLS; this envoy was started with --disable-tls" in (
        str(speaks_tls.value)
    )
    assert tls_director.certs is not None
    encrypted = {
        **_connection(director, unique("tls")),
        "tls": True,
        "root_certificate": tls_director.certs.root_certificate,
        "private_key": tls_director.certs.private_key,
        "certificate": tls_director.certs.certificate,
    }
    with caplog.at_level("WARNING"), ShardDirectorClient(**encrypted) as client:
        with pytest.raises(TLSHandshakeError) as speaks_plain:
            client.report_shard_info(matching_descriptor(), [])
    assert f"the director at {director.host}:{director.port} speaks plain text" in str(
        speaks_plain.value
    )
    assert "attempt 1 of" not in caplog.text

"""AsyncEnvoyDirectorClient (OpenFL 1.9) against a LocalWorkflowDirector on the test's loop."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from grpclib.const import Status

from shardclient import (
    AsyncEnvoyDirectorClient,
    AsyncShardDirectorClient,
    ClientClosedError,
    DirectorRPCError,
    DirectorUnavailableError,
    EnvoyNotFoundError,
    InvalidArgumentError,
    RetryPolicy,
)
from shardclient.testing import CHUNK_SIZE, LocalDirector, LocalWorkflowDirector
from tests.helpers.director import PERIOD, SAMPLE_SHAPE, TARGET_SHAPE

pytestmark = pytest.mark.anyio


@pytest.fixture
async def local() -> AsyncIterator[LocalWorkflowDirector]:
    async with LocalWorkflowDirector(health_check_period=PERIOD) as director:
        yield director


@pytest.fixture
async def client(local: LocalWorkflowDirector) -> AsyncIterator[AsyncEnvoyDirectorClient]:
    async with AsyncEnvoyDirectorClient(
        director_host=local.host, director_port=local.port, envoy_name="Portland"
    ) as async_client:
        yield async_client


async def test_connect_then_health_checks(
    client: AsyncEnvoyDirectorClient, local: LocalWorkflowDirector
) -> None:
    with pytest.raises(EnvoyNotFoundError) as unknown:
        await client.send_health_check(envoy_name="Portland", is_experiment_running=False)
    assert unknown.value.envoy_name == "Portland"
    assert "UpdateEnvoyStatus (OpenFL 1.9)" in str(unknown.value)
    assert "Unknown envoy Portland" in str(unknown.value)
    assert await client.connect_envoy("Portland")
    assert await client.send_health_check(envoy_name="Portland", is_experiment_running=True) == (
        PERIOD
    )
    status = local.envoys["Portland"]
    assert status is not None and status.is_experiment_running


async def test_a_client_without_a_name_takes_the_one_it_connects_with(
    local: LocalWorkflowDirector,
) -> None:
    async with AsyncEnvoyDirectorClient(
        director_host=local.host, director_port=local.port
    ) as client:
        with pytest.raises(InvalidArgumentError, match="^envoy_name must be given"):
            await client.wait_experiment()
        assert await client.connect_envoy("Seattle")
        assert client.envoy_name == "Seattle"
        local.submit_experiment("Flow", b"zip", ["Seattle"])
        assert await client.wait_experiment() == "Flow"


async def test_wait_stream_and_download(
    client: AsyncEnvoyDirectorClient, local: LocalWorkflowDirector, tmp_path: Path
) -> None:
    archive = bytes(range(256)) * (CHUNK_SIZE // 256 * 2 + 7)
    local.submit_experiment("FedAvgFlow", archive, ["Portland", "Seattle"])
    assert await client.wait_experiment() == "FedAvgFlow"
    chunks = [chunk async for chunk in client.get_experiment_data("FedAvgFlow")]
    assert [chunk.size for chunk in chunks] == [len(chunk.exp_data) for chunk in chunks]
    assert b"".join(chunk.exp_data for chunk in chunks) == archive
    saved = await client.download_experiment("FedAvgFlow", tmp_path)
    assert saved.path == tmp_path / "FedAvgFlow.zip"
    assert saved.sha256 == hashlib.sha256(archive).hexdigest()
    # as OpenFL's director does while the experiment runs: the same one, at once
    assert await client.wait_experiment() == "FedAvgFlow"


async def test_an_unknown_experiment_is_the_director_s_error(
    client: AsyncEnvoyDirectorClient,
) -> None:
    with pytest.raises(DirectorRPCError) as failed:
        async for _ in client.get_experiment_data("nope"):
            pass
    assert failed.value.status is Status.UNKNOWN
    assert str(failed.value).startswith("GetExperimentData (OpenFL 1.9) failed at ")


async def test_close_ends_a_pending_long_poll(client: AsyncEnvoyDirectorClient) -> None:
    async with anyio.create_task_group() as group:
        errors: list[BaseException] = []

        async def wait() -> None:
            try:
                await client.wait_experiment()
            except ClientClosedError as exc:
                errors.append(exc)

        group.start_soon(wait)
        await anyio.sleep(0.2)  # let the poll reach the director; the check is the error
        await client.close()
    assert len(errors) == 1


async def test_unreachable_names_generation_and_address(free_port: int) -> None:
    async with AsyncEnvoyDirectorClient(
        director_host="127.0.0.1", director_port=free_port, envoy_name="e", retry=None
    ) as client:
        with pytest.raises(DirectorUnavailableError) as failed:
            await client.connect_envoy()
    assert str(failed.value).startswith(
        f"EnvoyConnectionRequest (OpenFL 1.9): cannot reach the director at 127.0.0.1:{free_port}"
    )


async def test_each_generation_is_unimplemented_at_the_other_s_director() -> None:
    """The two protocols' paths never collide: how `shardclient run` tells them apart."""
    fast = RetryPolicy(max_attempts=1)
    async with LocalDirector(sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE) as older:
        async with AsyncEnvoyDirectorClient(
            director_host=older.host, director_port=older.port, envoy_name="e", retry=fast
        ) as newer_client:
            with pytest.raises(DirectorRPCError) as answer:
                await newer_client.send_health_check(envoy_name="e", is_experiment_running=False)
    assert answer.value.status is Status.UNIMPLEMENTED
    async with LocalWorkflowDirector() as newer:
        async with AsyncShardDirectorClient(
            director_host=newer.host, director_port=newer.port, shard_name="s", tls=False
        ) as older_client:
            with pytest.raises(DirectorRPCError) as answer:
                await older_client.send_health_check(envoy_name="s", is_experiment_running=False)
    assert answer.value.status is Status.UNIMPLEMENTED

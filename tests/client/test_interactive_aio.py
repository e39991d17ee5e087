"""AsyncShardDirectorClient against a LocalDirector served on the test's own loop."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import anyio
import pytest
from grpclib.const import Status

from shardclient import (
    AsyncShardDirectorClient,
    ClientClosedError,
    DirectorRPCError,
    DirectorUnavailableError,
    ShardNotFoundError,
)
from shardclient.testing import CHUNK_SIZE, LocalDirector
from tests.helpers.director import PERIOD, SAMPLE_SHAPE, TARGET_SHAPE, Descriptor

pytestmark = pytest.mark.anyio


@pytest.fixture
async def local() -> AsyncIterator[LocalDirector]:
    async with LocalDirector(
        sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE, health_check_period=PERIOD
    ) as director:
        yield director


@pytest.fixture
async def client(local: LocalDirector) -> AsyncIterator[AsyncShardDirectorClient]:
    async with AsyncShardDirectorClient(
        director_host=local.host, director_port=local.port, shard_name="s1", tls=False
    ) as async_client:
        yield async_client


async def test_register_and_health_check(
    client: AsyncShardDirectorClient, local: LocalDirector
) -> None:
    with pytest.raises(ShardNotFoundError):
        await client.send_health_check(envoy_name="s1", is_experiment_running=False)
    assert await client.report_shard_info(Descriptor(), [0]) is True
    assert local.shards["s1"].sample_shape == ["28", "28"]
    period = await client.send_health_check(
        envoy_name="s1", is_experiment_running=False, cuda_devices_info=[{"index": 0}]
    )
    assert period == PERIOD


async def test_refused_registration(client: AsyncShardDirectorClient) -> None:
    assert await client.report_shard_info(Descriptor(target_shape=[10]), []) is False


async def test_wait_and_stream(client: AsyncShardDirectorClient, local: LocalDirector) -> None:
    archive = b"\x01\x02" * (CHUNK_SIZE + 7)
    async with anyio.create_task_group() as group:
        names: list[str] = []

        async def wait() -> None:
            names.append(await client.wait_experiment())

        group.start_soon(wait)
        await anyio.sleep(0)  # let the long poll start before the experiment exists
        local.submit_experiment("e", archive, ["s1"])
    assert names == ["e"]
    sizes = []
    digest = hashlib.sha256()
    async for chunk in client.get_experiment_data("e"):
        sizes.append(chunk.size)
        digest.update(chunk.npbytes)
    assert sizes == [CHUNK_SIZE, CHUNK_SIZE, 14]
    assert digest.digest() == hashlib.sha256(archive).digest()
    await client.set_experiment_failed("e", 2, "bad")
    assert [(f.error_code, f.error_description) for f in local.failures] == [(2, "bad")]


async def test_stream_of_unknown_experiment(client: AsyncShardDirectorClient) -> None:
    with pytest.raises(DirectorRPCError) as caught:
        async for _ in client.get_experiment_data("missing"):
            pass
    assert caught.value.status is Status.NOT_FOUND


async def test_close_ends_a_pending_long_poll(client: AsyncShardDirectorClient) -> None:
    await client.report_shard_info(Descriptor(), [])
    outcome: list[BaseException] = []

    async def wait() -> None:
        try:
            await client.wait_experiment()
        except ClientClosedError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        # one full round trip on the same connection after the long poll was sent
        await client.send_health_check(envoy_name="s1", is_experiment_running=False)
        await client.close()
    assert len(outcome) == 1
    with pytest.raises(ClientClosedError):
        await client.wait_experiment()


async def test_unreachable(free_port: int) -> None:
    async with AsyncShardDirectorClient(
        director_host="127.0.0.1",
        director_port=free_port,
        shard_name="s1",
        tls=False,
        retry=None,
    ) as unreachable:
        with pytest.raises(DirectorUnavailableError, match=f"127.0.0.1:{free_port}"):
            await unreachable.report_shard_info(Descriptor(), [])

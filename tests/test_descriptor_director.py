"""report_shard_info against LocalDirector: int shapes register with a director that compares
strings (the case where OpenFL's own client raises TypeError), and bad descriptors send nothing."""

from __future__ import annotations

import pytest

from shardclient import AsyncShardDirectorClient, ShardDescriptorError, ShardDirectorClient
from shardclient._descriptor import StaticShardDescriptor
from shardclient.messages import CudaDeviceInfo
from shardclient.testing import LocalDirector


class IntShapes:
    """OpenFL's DummyShardDescriptor style: properties returning lists of ints."""

    @property
    def sample_shape(self) -> list[int]:
        return [28, 28]

    @property
    def target_shape(self) -> list[int]:
        return [1]

    @property
    def dataset_description(self) -> str:
        return "ints"


class FloatShapes(IntShapes):
    @property
    def sample_shape(self) -> list[float]:  # type: ignore[override]
        return [28.0, 28.0]


def test_int_shapes_are_accepted_by_a_director_configured_with_strings() -> None:
    with LocalDirector(sample_shape=["28", "28"], target_shape=["1"]) as director:
        with ShardDirectorClient(
            director_host=director.host, director_port=director.port, shard_name="s1", tls=False
        ) as client:
            assert client.report_shard_info(IntShapes(), cuda_devices=[]) is True
        registered = director.shards["s1"]
    assert registered.sample_shape == ["28", "28"]
    assert registered.target_shape == ["1"]
    assert registered.shard_description == "ints"
    assert registered.node_info.name == "s1"


def test_static_descriptor_with_cuda_devices() -> None:
    descriptor = StaticShardDescriptor([28, 28], [1], "static", n_samples=600)
    with LocalDirector(sample_shape=["28", "28"], target_shape=["1"]) as director:
        with ShardDirectorClient(
            director_host=director.host, director_port=director.port, shard_name="s2", tls=False
        ) as client:
            assert client.report_shard_info(descriptor, cuda_devices=[0, 1]) is True
        registered = director.shards["s2"]
    assert registered.n_samples == 600
    assert registered.node_info.cuda_devices == [CudaDeviceInfo(index=0), CudaDeviceInfo(index=1)]


def test_other_shapes_are_refused_not_raised() -> None:
    with LocalDirector(sample_shape=["28", "28"], target_shape=["1"]) as director:
        with ShardDirectorClient(
            director_host=director.host, director_port=director.port, shard_name="s3", tls=False
        ) as client:
            assert client.report_shard_info(StaticShardDescriptor([32, 32], [1])) is False
        assert director.shards == {}


def test_an_invalid_descriptor_sends_nothing() -> None:
    with LocalDirector(sample_shape=["28", "28"], target_shape=["1"]) as director:
        with ShardDirectorClient(
            director_host=director.host, director_port=director.port, shard_name="s4", tls=False
        ) as client:
            with pytest.raises(
                ShardDescriptorError, match=r"^sample_shape\[0\]: .*28\.0 \(float\)"
            ):
                client.report_shard_info(FloatShapes())  # type: ignore[arg-type]  # floats on purpose
            with pytest.raises(ShardDescriptorError, match=r"^cuda_devices\[0\]: .*-1 \(int\)"):
                client.report_shard_info(IntShapes(), cuda_devices=[-1])
        assert director.shards == {}


@pytest.mark.anyio
async def test_async_client_with_int_shapes() -> None:
    async with LocalDirector(sample_shape=["28", "28"], target_shape=["1"]) as director:
        async with AsyncShardDirectorClient(
            director_host=director.host, director_port=director.port, shard_name="s5", tls=False
        ) as client:
            assert await client.report_shard_info(IntShapes(), cuda_devices=[]) is True
            with pytest.raises(ShardDescriptorError):
                await client.report_shard_info(FloatShapes())  # type: ignore[arg-type]  # on purpose
        assert director.shards["s5"].sample_shape == ["28", "28"]

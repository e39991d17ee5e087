"""The envoy loop's health checks survive director outages and lost registrations."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from shardclient import AsyncShardDirectorClient, GpuInfoError, ShardRefusedError
from shardclient._envoy.directors import InteractiveDirector
from shardclient._envoy.envoy import Envoy
from shardclient.messages import CudaDeviceInfo
from shardclient.testing import LocalDirector
from tests.helpers.director import SAMPLE_SHAPE, TARGET_SHAPE, Descriptor

pytestmark = pytest.mark.anyio


class Stepper:
    """Replaces the envoy's sleep: each health-loop iteration is one step the test awaits."""

    def __init__(self) -> None:
        self.steps = 0
        self._advanced = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        self.steps += 1
        self._advanced.set()
        self._advanced = anyio.Event()
        await anyio.sleep(0)

    async def run(self, count: int) -> None:
        target = self.steps + count
        while self.steps < target:
            await self._advanced.wait()


class BrokenGpus:
    """A GPU monitor whose devices are lost."""

    def devices(self, indices: list[int] | None = None) -> list[CudaDeviceInfo]:
        raise GpuInfoError(f"CUDA device {indices[0] if indices else 0}: GPU is lost")


async def test_health_loop_survives_outages_and_reregisters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stepper = Stepper()
    async with LocalDirector(sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE) as director:
        async with AsyncShardDirectorClient(
            director_host=director.host,
            director_port=director.port,
            shard_name="s1",
            tls=False,
            retry=None,
        ) as client:
            envoy = Envoy(
                InteractiveDirector(client, descriptor=Descriptor()),
                workdir=tmp_path,
                sleep=stepper.sleep,
            )
            await envoy.register()
            with caplog.at_level(logging.INFO, logger="shardclient.envoy"):
                async with anyio.create_task_group() as group:
                    group.start_soon(envoy.health_loop)
                    await stepper.run(2)
                    assert envoy.health_checks_sent == 2

                    await director.stop()  # the director goes away...
                    await stepper.run(5)
                    assert envoy.health_checks_sent == 2

                    director.forget_shards()  # ...and comes back without our registration
                    await director.start()
                    await stepper.run(2)
                    group.cancel_scope.cancel()
            assert envoy.health_checks_sent == 4
            assert "s1" in director.shards  # registered again by the loop
    messages = [r.getMessage() for r in caplog.records]
    outage = [m for m in messages if m.startswith("health check: ") and "logged once" in m]
    assert len(outage) == 1  # five failed health checks, one warning
    assert "127.0.0.1" in outage[0]
    assert any("lost s1; registering again" in m for m in messages)
    assert any(m == "health check: recovered" for m in messages)


async def test_health_checks_go_on_without_gpu_readings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stepper = Stepper()
    async with LocalDirector(sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE) as director:
        async with AsyncShardDirectorClient(
            director_host=director.host,
            director_port=director.port,
            shard_name="s1",
            tls=False,
            retry=None,
        ) as client:
            director_link = InteractiveDirector(
                client,
                descriptor=Descriptor(),
                cuda_devices=[0],
                monitor=BrokenGpus(),  # type: ignore[arg-type]  # a stand-in monitor
            )
            envoy = Envoy(director_link, workdir=tmp_path, sleep=stepper.sleep)
            await envoy.register()
            with caplog.at_level(logging.WARNING, logger="shardclient.envoy"):
                async with anyio.create_task_group() as group:
                    group.start_soon(envoy.health_loop)
                    await stepper.run(3)
                    group.cancel_scope.cancel()
            assert envoy.health_checks_sent == 3
            assert director.statuses["s1"].cuda_devices == ()
    gpu_warnings = [r for r in caplog.records if "GPU is lost" in r.getMessage()]
    assert len(gpu_warnings) == 1


async def test_refused_registration_names_the_shapes_sent(tmp_path: Path) -> None:
    async with LocalDirector(sample_shape=["3"], target_shape=["1"]) as director:
        async with AsyncShardDirectorClient(
            director_host=director.host, director_port=director.port, shard_name="s1", tls=False
        ) as client:
            envoy = Envoy(InteractiveDirector(client, descriptor=Descriptor()), workdir=tmp_path)
            with pytest.raises(ShardRefusedError, match=r"\['28', '28'\]") as caught:
                await envoy.register()
    assert caught.value.target_shape == ["1"]

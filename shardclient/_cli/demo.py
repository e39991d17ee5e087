"""``shardclient demo``: one whole envoy cycle against an in-process LocalDirector.

Registration, health checks with this machine's GPU readings (when NVML is present), a
generated experiment archive downloaded with progress and its sha256 verified, and a failure
report round trip. Uses the OpenFL-compatible sync client, as envoy code would.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from shardclient import GpuMonitor, ShardClientError, ShardDirectorClient, StaticShardDescriptor
from shardclient.testing import CHUNK_SIZE, LocalDirector

__all__ = ["run_demo", "sample_archive"]

SHARD = "demo-shard"
EXPERIMENT = "demo-experiment"


def sample_archive(size: int = 6 * 1024 * 1024) -> bytes:
    """A zip like an experiment workspace: a plan and ``size`` bytes of (random) data."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("plan/plan.yaml", "aggregator:\n  settings:\n    rounds_to_train: 1\n")
        archive.writestr("data/weights.bin", os.urandom(size))
    return buffer.getvalue()


def run_demo(say: Callable[[str], None]) -> None:
    """Run the cycle, describing each step through ``say``; raises on any failure."""
    started = time.perf_counter()
    descriptor = StaticShardDescriptor(
        sample_shape=[28, 28],
        target_shape=[1],
        dataset_description="demo shard: 28x28 images, one label each",
    )
    with (
        GpuMonitor() as monitor,
        LocalDirector(
            sample_shape=["28", "28"], target_shape=["1"], health_check_period=5
        ) as director,
    ):
        say(f"local director listening on {director.host}:{director.port} (in-process, demo only)")
        cuda = [device.index for device in monitor.devices()] if monitor.available else []
        with ShardDirectorClient(
            director_host=director.host,
            director_port=director.port,
            shard_name=SHARD,
            tls=False,
        ) as client:
            accepted = client.report_shard_info(descriptor, cuda)
            if not accepted:
                raise ShardClientError("the local director refused the demo shard")
            say(
                f"1. registered shard {SHARD!r}: sample_shape [28, 28] -> target_shape [1], "
                f"{len(cuda)} CUDA device(s)"
            )

            readings = monitor.devices(cuda) if cuda else []
            period = client.send_health_check(
                envoy_name=SHARD, is_experiment_running=False, cuda_devices_info=readings
            )
            say(f"2. health check sent; the director asks for the next in {period} s")
            if not monitor.available:
                say(f"   no GPU readings: NVML is unavailable ({monitor.unavailable_reason})")
            for gpu in readings:
                say(
                    f"   GPU {gpu.index}: {gpu.name}, {gpu.memory_utilized // 2**20} / "
                    f"{gpu.memory_total // 2**20} MiB used, {gpu.device_utilization} busy, "
                    f"driver {gpu.cuda_driver_version}, CUDA {gpu.cuda_version}"
                )

            archive = sample_archive()
            expected = hashlib.sha256(archive).hexdigest()
            director.submit_experiment(EXPERIMENT, archive, [SHARD])
            name = client.wait_experiment()
            say(f"3. experiment {name!r} received ({len(archive) / 2**20:.1f} MiB archive)")

            with tempfile.TemporaryDirectory(prefix="shardclient-demo-") as workdir:
                chunks: list[int] = []

                def progress(received: int, total: int | None) -> None:
                    chunks.append(received)
                    say(f"   {received / 2**20:5.1f} MiB")

                result = client.download_experiment(name, Path(workdir), progress=progress)
                if result.sha256 != expected:
                    raise ShardClientError("the downloaded archive does not match what was sent")
                with zipfile.ZipFile(result.path) as downloaded:
                    members = downloaded.namelist()
            say(
                f"4. downloaded {result.size} bytes in {len(chunks)} chunk(s) of at most "
                f"{CHUNK_SIZE // 2**20} MiB; sha256 {result.sha256[:16]}... verified; "
                f"zip holds {', '.join(members)}"
            )

            client.set_experiment_failed(name, error_code=3, error_description="demo failure")
            (failure,) = director.failures
            say(
                f"5. failure reported and recorded by the director: experiment "
                f"{failure.experiment_name!r}, code {failure.error_code}, "
                f"{failure.error_description!r}"
            )
    say(
        f"done in {time.perf_counter() - started:.2f} s: register, health check, wait, "
        "download, failure report all worked"
    )

"""The shardclient command and long polls against the real OpenFL 1.6 director."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shardclient import DirectorRPCError, ShardDirectorClient
from tests.interop.openfl_director import RunningDirector, submit_experiment
from tests.interop.test_real_director import (
    WAIT_EXPERIMENT_DEADLINE_S,
    any_director,
    matching_descriptor,
    unique,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(600)]

__all__ = ["any_director"]  # the parametrized fixture, shared with test_real_director

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _tls_flags(director: RunningDirector) -> list[str]:
    if director.certs is None:
        return ["--disable-tls"]
    return [
        "-rc", str(director.certs.root_certificate),
        "-pk", str(director.certs.private_key),
        "-oc", str(director.certs.certificate),
    ]  # fmt: skip


def _archive(folder: Path) -> tuple[Path, str]:
    # not a zip: the director keeps a non-zip archive available (see test_real_director)
    data = os.urandom(3 * 1024 * 1024 + 777).replace(b"PK\x05\x06", b"pk\x05\x06")
    path = folder / "archive.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_shardclient_run_once_end_to_end(any_director: RunningDirector, tmp_path: Path) -> None:
    shard = unique("cli")
    config_dir = tmp_path / "envoy"
    shutil.copytree(FIXTURES / "envoy_ints", config_dir)
    config = config_dir / "envoy_config.yaml"
    text = config.read_text().replace("cuda_devices: [0, 2]", "cuda_devices: []")
    config.write_text(text.replace("review_experiment: true", "review_experiment: false"))
    workdir = tmp_path / "work"
    archive, sha256 = _archive(tmp_path)
    envoy = subprocess.Popen(
        [sys.executable, "-m", "shardclient", "run", "-n", shard,
         "-dh", any_director.host, "-dp", str(any_director.port), *_tls_flags(any_director),
         "-ec", str(config), "--workdir", str(workdir), "--once", "--download-only"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    experiment = unique("cli-exp")
    try:
        submit_experiment(any_director, name=experiment, collaborators=[shard], archive=archive)
        _, stderr = envoy.communicate(timeout=WAIT_EXPERIMENT_DEADLINE_S + 60)
    finally:
        if envoy.poll() is None:
            envoy.kill()
            envoy.communicate()
    assert envoy.returncode == 0, stderr
    downloaded = workdir / f"{experiment}.zip"
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == sha256


def test_long_poll_with_frequent_keepalive_pings(
    any_director: RunningDirector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pings every 0.2 s while waiting, far more often than gRPC C-core servers allow without
    data (they answer with GOAWAY too_many_pings, closing the connection): each cut poll is
    sent again, and the wait ends with the experiment.

    One ending belongs to the director, not the client. When a cut lands just as the director
    hands the experiment over, the handler on the dead connection takes it and its reply is
    lost. The director then answers every repeated poll with its 'round_number' bug (it looks
    up the aggregator, which this test's non-zip archive never starts). That error only comes
    once the director holds an experiment for the shard, and this shard has one experiment,
    so it also proves the hand-over happened.
    """
    shard = unique("pings")
    certs = any_director.certs
    client = ShardDirectorClient(
        director_host=any_director.host, director_port=any_director.port, shard_name=shard,
        tls=certs is not None,
        root_certificate=certs.root_certificate if certs else None,
        private_key=certs.private_key if certs else None,
        certificate=certs.certificate if certs else None,
        keepalive_time=0.2, keepalive_timeout=5,
    )  # fmt: skip
    result: list[str | BaseException] = []
    handed_over_then_lost: list[DirectorRPCError] = []
    archive, _ = _archive(tmp_path)
    with client, caplog.at_level(logging.INFO, logger="shardclient"):
        assert client.report_shard_info(matching_descriptor(), [])

        def wait() -> None:
            try:
                result.append(client.wait_experiment())
            except DirectorRPCError as exc:
                if "round_number" not in exc.details:
                    result.append(exc)
                    return
                handed_over_then_lost.append(exc)
                try:  # the bug persists: one more poll shows it is not a passing state
                    result.append(client.wait_experiment())
                except BaseException as again:  # handed to the test thread below
                    result.append(again)
            except BaseException as exc:  # handed to the test thread below
                result.append(exc)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        name = unique("pings-exp")
        submit_experiment(any_director, name=name, collaborators=[shard], archive=archive)
        waiter.join(WAIT_EXPERIMENT_DEADLINE_S)
    waiter.join(10)
    cuts = caplog.text.count("the long poll was cut")
    assert cuts >= 1, (
        f"the pings never got the poll cut; the test exercised nothing:\n{caplog.text}"
    )
    if handed_over_then_lost:
        assert len(result) == 1 and isinstance(result[0], DirectorRPCError), result
        assert "round_number" in result[0].details, result
    else:
        assert result == [name], caplog.text

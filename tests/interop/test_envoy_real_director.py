"""The shardclient command and long polls against the real OpenFL 1.6 director."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
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
    data (they answer with GOAWAY too_many_pings); the wait still ends with the experiment."""
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
    archive, _ = _archive(tmp_path)
    with client, caplog.at_level(logging.WARNING):
        assert client.report_shard_info(matching_descriptor(), [])

        def wait() -> None:
            for _ in range(20):
                try:
                    result.append(client.wait_experiment())
                except DirectorRPCError as exc:
                    # The director's reconnect path: a poll repeated (after GOAWAY) before
                    # the experiment's aggregator started fails inside it, UNKNOWN with an
                    # AttributeError on 'round_number'. The envoy asks again; so does this.
                    if "round_number" in exc.details:
                        time.sleep(1)
                        continue
                    result.append(exc)
                except BaseException as exc:  # handed to the test thread below
                    result.append(exc)
                return

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        name = unique("pings-exp")
        submit_experiment(any_director, name=name, collaborators=[shard], archive=archive)
        waiter.join(WAIT_EXPERIMENT_DEADLINE_S)
    waiter.join(10)
    assert result == [name], caplog.text

"""Downloading a 256 MiB archive grows the client's peak RSS by less than 32 MiB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shardclient.testing import CHUNK_SIZE, LocalDirector

MiB = 1024 * 1024
ARCHIVE = 256 * MiB
LIMIT = 32 * MiB


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_rss_growth_while_downloading_256_mib(tmp_path: Path) -> None:
    archive = tmp_path / "archive.bin"
    with archive.open("wb") as out:
        block = os.urandom(CHUNK_SIZE)
        for _ in range(ARCHIVE // CHUNK_SIZE):
            out.write(block)
    dest = tmp_path / "dest"
    dest.mkdir()
    with LocalDirector(sample_shape=["1"], target_shape=["1"]) as director:
        director.submit_experiment("warmup", os.urandom(3 * CHUNK_SIZE), ["s1"])
        director.submit_experiment("big", archive, ["s1"])
        probe = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).parents[1] / "helpers" / "rss_probe.py"),
                director.host,
                str(director.port),
                str(dest),
                "warmup",
                "big",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    assert report["size"] == ARCHIVE
    growth = (report["peak"] - report["baseline"]) * 1024
    print(f"peak RSS growth: {growth / MiB:.1f} MiB")
    assert growth < LIMIT, f"peak RSS grew by {growth / MiB:.1f} MiB"

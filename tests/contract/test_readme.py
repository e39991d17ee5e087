"""The README's library examples run as pasted, against a LocalDirector on port 50051.

Each ```python block after a ``<!-- readme-example -->`` marker runs in a fresh interpreter,
in a temporary folder, with an experiment waiting for its shard.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shardclient.testing import LocalDirector
from tests.helpers.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
PORT = 50051  # the examples' port
BLOCK = re.compile(r"<!-- readme-example -->\n```python\n(.*?)```", re.DOTALL)


def _examples() -> list[str]:
    blocks = BLOCK.findall(README.read_text())
    assert len(blocks) == 2, "the README's two marked library examples"
    return blocks


def test_the_readme_examples_run(tmp_path: Path) -> None:
    """One test for both (they share the port, and tests may run in parallel)."""
    try:
        director = LocalDirector(sample_shape=["28", "28"], target_shape=["1"], port=PORT)
        director.__enter__()
    except OSError as exc:
        pytest.fail(f"port {PORT}, which the README's examples use, is taken: {exc}")
    archive = b"an experiment archive" * 100_000
    try:
        for number, code in enumerate(_examples(), start=1):
            shard = re.search(r'shard_name="([^"]+)"', code)
            assert shard is not None
            director.submit_experiment(f"exp-{number}", archive, [shard.group(1)])
            done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert f"experiment exp-{number}: " in done.stdout
            assert str(len(archive)) in done.stdout
    finally:
        director.__exit__(None, None, None)

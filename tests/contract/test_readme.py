"""The README's library examples run as pasted, against local directors on their ports.

Each ```python block after a ``<!-- readme-example -->`` marker runs in a fresh interpreter,
in a temporary folder, with an experiment waiting for its shard at a LocalDirector on port
50051; each after ``<!-- readme-example-workflow -->``, likewise at a LocalWorkflowDirector on
port 50052.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shardclient.testing import LocalDirector, LocalWorkflowDirector
from tests.helpers.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
PORT = 50051  # the examples' port
BLOCK = re.compile(r"<!-- readme-example -->\n```python\n(.*?)```", re.DOTALL)
WORKFLOW_PORT = 50052
WORKFLOW_BLOCK = re.compile(r"<!-- readme-example-workflow -->\n```python\n(.*?)```", re.DOTALL)


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


def test_the_readme_workflow_example_runs(tmp_path: Path) -> None:
    (code,) = WORKFLOW_BLOCK.findall(README.read_text())
    try:
        director = LocalWorkflowDirector(port=WORKFLOW_PORT)
        director.__enter__()
    except OSError as exc:
        pytest.fail(f"port {WORKFLOW_PORT}, which the README's example uses, is taken: {exc}")
    archive = b"a workspace archive" * 100_000
    try:
        director.submit_experiment("FedAvgFlow", archive, ["Portland"])
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"experiment FedAvgFlow: {len(archive)} bytes" in done.stdout
        assert director.connections == {"Portland": 1}
    finally:
        director.__exit__(None, None, None)

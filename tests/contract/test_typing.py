"""The package as a type checker outside this checkout sees it: every exported symbol's
type known (pyright's --verifytypes), and a user's script checked by mypy and pyright
against the installed package (an editable install included)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

USER_SCRIPT = """\
import asyncio
from pathlib import Path

from shardclient import (
    AsyncShardDirectorClient,
    DownloadedExperiment,
    ShardDirectorClient,
    StaticShardDescriptor,
)


def sync_envoy(client: ShardDirectorClient) -> DownloadedExperiment:
    descriptor = StaticShardDescriptor(sample_shape=[28, 28], target_shape=[1])
    accepted: bool = client.report_shard_info(descriptor, cuda_devices=[])
    period: int = client.send_health_check(envoy_name="a", is_experiment_running=accepted)
    name: str = client.wait_experiment()
    sizes = [len(chunk.npbytes) for chunk in client.get_experiment_data(name)]
    assert period >= 0 and sum(sizes) >= 0
    return client.download_experiment(name, Path("."))


async def async_envoy(client: AsyncShardDirectorClient) -> str:
    return await client.wait_experiment()


reveal_type(asyncio.run)
"""


def _env() -> dict[str, str]:
    """This interpreter's environment, as if activated (pyright finds packages that way)."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "VIRTUAL_ENV": sys.prefix,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def _basedpyright() -> str:
    path = Path(sys.executable).parent / "basedpyright"
    if not path.exists():
        pytest.skip("basedpyright is not installed (pip install -e '.[dev]' installs it)")
    return str(path)


def test_every_exported_symbol_has_a_known_type(tmp_path: Path) -> None:
    done = _run([_basedpyright(), "--verifytypes", "shardclient", "--ignoreexternal"], tmp_path)
    assert "Type completeness score: 100%" in done.stdout, done.stdout[-4000:]


def test_a_user_script_type_checks_against_the_installed_package(tmp_path: Path) -> None:
    script = tmp_path / "user_envoy.py"
    script.write_text(USER_SCRIPT)
    mypy = _run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                 "--python-executable", sys.executable, script.name], tmp_path)  # fmt: skip
    assert "Success: no issues found" in mypy.stdout, mypy.stdout + mypy.stderr
    pyright = _run([_basedpyright(), script.name], tmp_path)
    assert "0 errors" in pyright.stdout, pyright.stdout

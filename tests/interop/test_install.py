"""The README's install lines for a data owner's envoy work as written on a fresh venv: each
installs shardclient from the checkout with its generation's OpenFL collaborator, and the
envoy finds it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT
from tests.interop.openfl_director import NETWORK_FAILURE

pytestmark = pytest.mark.interop

PIP_TIMEOUT_S = 480.0
# the marker, the venv the line makes under ~, and the module the collaborator child imports
LINES = {
    "envoy-install": ("envoy-venv", "openfl.federated"),
    "envoy-install-workflow": ("envoy-venv-1.9", "openfl.experimental.workflow.federated"),
}


@pytest.mark.parametrize("marker", list(LINES))
def test_the_readme_envoy_install_line_works(tmp_path: Path, marker: str) -> None:
    pattern = re.compile(rf"<!-- {marker} -->\n```\n(.*?)\n```", re.DOTALL)
    (line,) = pattern.findall((REPO_ROOT / "README.md").read_text())
    venv, module = LINES[marker]
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
    bin_dir = tmp_path / venv / "bin"
    version = subprocess.run(
        [str(bin_dir / "shardclient"), "--version"], capture_output=True, text=True, check=True
    )
    assert "shardclient" in version.stdout
    # the collaborator child's OpenFL imports (with USER set: metaflow needs one)
    imports = subprocess.run(
        [str(bin_dir / "python"), "-c", f"import {module}"],
        env=dict(os.environ, USER=os.environ.get("USER") or "envoy"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert imports.returncode == 0, imports.stderr[-3000:]

"""A Python environment of one experiment's own, for its requirements.

OpenFL's envoy pip-installs an experiment's requirements.txt into the envoy's own
environment; here they go into a fresh virtual environment that still sees the envoy's
packages (OpenFL, shardclient, the shard descriptor's dependencies): a ``.pth`` file in it
adds the envoy's site directories after its own, so whatever the experiment installs wins
and the envoy's environment is never touched. pip's output goes to the experiment's log.
"""

from __future__ import annotations

import shutil
import site
import sys
from collections.abc import Mapping
from pathlib import Path

from shardclient._envoy.process import ProcessResult, run_in_group

__all__ = [
    "create_environment",
    "environment_python",
    "envoy_site_dirs",
    "install_requirements",
    "remove_environment",
]

_PTH_NAME = "_shardclient_envoy_packages.pth"


def envoy_site_dirs() -> list[str]:
    """The site directories this interpreter takes its packages from, in order."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        user = site.getusersitepackages()
        if Path(user).is_dir():
            dirs.append(user)
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def _site_packages(environment: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return environment / "lib" / version / "site-packages"


def environment_python(environment: Path) -> Path:
    return environment / "bin" / "python"


async def create_environment(
    environment: Path, *, log_path: Path, label: str, env: Mapping[str, str]
) -> ProcessResult:
    """Create a virtual environment at ``environment`` (with pip) that sees the envoy's
    packages. Returns venv's result (exit code 0 on success)."""
    result = await run_in_group(
        [sys.executable, "-m", "venv", str(environment)],
        cwd=environment.parent,
        env=env,
        log_path=log_path,
        label=label,
    )
    if result.exit_code == 0:
        lines = [f"import site; site.addsitedir({d!r})" for d in envoy_site_dirs()]
        (_site_packages(environment) / _PTH_NAME).write_text("\n".join(lines) + "\n")
    return result


async def install_requirements(
    environment: Path, requirements: Path, *, cwd: Path, log_path: Path, label: str,
    env: Mapping[str, str],
) -> ProcessResult:  # fmt: skip
    """pip-install ``requirements`` into ``environment``; returns pip's result."""
    command = [
        str(environment_python(environment)), "-m", "pip", "install",
        "--disable-pip-version-check", "--no-input", "-r", str(requirements),
    ]  # fmt: skip
    return await run_in_group(command, cwd=cwd, env=env, log_path=log_path, label=label)


def remove_environment(environment: Path) -> None:
    shutil.rmtree(environment, ignore_errors=True)

"""Envoy config files, read within bounds and checked, naming the file and the key at fault.

``interactive``: OpenFL 1.5-1.7's envoy_config.yaml (a shard descriptor); ``workflow``:
OpenFL 1.9's (the director's address and the envoy's private attributes). ``checks`` reads a
file and its typed values, ``template`` imports what a config names as ``fx`` does, and
``bounded_yaml`` parses untrusted YAML (configs, and the plans inside experiment archives).
"""

from __future__ import annotations

import os
from pathlib import Path

from shardclient._config.checks import Checker, read_config
from shardclient._generation import Generation

__all__ = ["config_generation"]


def config_generation(path: str | os.PathLike[str]) -> Generation | None:
    """Which OpenFL generation's envoy config ``path`` is: 1.5-1.7's names a
    shard_descriptor, 1.9's a ``settings`` section (the director's address). None when it
    says neither (EnvoyConfigError when it cannot be read)."""
    file = Path(path).absolute()
    raw = read_config(file, Checker(file), "a shard_descriptor or settings")
    if "shard_descriptor" in raw:
        return Generation.INTERACTIVE
    if isinstance(raw.get("settings"), dict):
        return Generation.WORKFLOW
    return None

"""The committed generated/ code is exactly what generated/generate.py makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import REPO_ROOT

ROOT = REPO_ROOT
COMMITTED = ROOT / "generated" / "shardclient_proto"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "shardclient_proto"
    subprocess.run(
        [sys.executable, str(ROOT / "generated" / "generate.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    fresh, committed = _files(out), _files(COMMITTED)
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"regenerate with `python generated/generate.py`: {stale} differ"


def test_method_paths_match_openfl() -> None:
    from shardclient.messages import DirectorBase

    class Probe(DirectorBase):
        pass

    assert sorted(Probe().__mapping__()) == [
        "/openfl.director.Director/GetExperimentData",
        "/openfl.director.Director/SetExperimentFailed",
        "/openfl.director.Director/UpdateEnvoyStatus",
        "/openfl.director.Director/UpdateShardInfo",
        "/openfl.director.Director/WaitExperiment",
    ]

"""Regenerate the betterproto code in generated/ from proto/.

Run from anywhere with the dev extra installed:

    python generated/generate.py

Output goes to generated/shardclient_proto/ (import name ``shardclient_proto``);
``--out DIR`` writes elsewhere (the freshness test uses it). Never edit the output.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "shardclient_proto"
DEFAULT_OUT = ROOT / "generated" / PACKAGE


def _plugin() -> str:
    """Path of betterproto's protoc plugin installed beside this interpreter."""
    name = "protoc-gen-python_betterproto"
    candidate = Path(sysconfig.get_path("scripts")) / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        sys.exit(f"{name} not found: install the dev extra (betterproto[compiler])")
    return found


def generate(out: Path) -> None:
    """Write the generated package for every .proto under proto/ into ``out``."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO_DIR}",
                f"--plugin=protoc-gen-python_betterproto={_plugin()}",
                f"--python_betterproto_out={tmp}",
                *protos,
            ],
            check=True,
            cwd=PROTO_DIR,
            stdout=subprocess.DEVNULL,
        )
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp, out)
    (out / "py.typed").write_text("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()

"""grpcio code for the benchmark, generated from proto/ at run time (never committed).

``python -m grpc_tools.protoc --python_out --grpc_python_out`` writes ``director_pb2.py`` and
``director_pb2_grpc.py`` into ``bench/.cache/grpcio-<key>/``, where the key covers the proto's
text and the grpcio-tools version, so a changed proto or tool regenerates. The proto keeps its
``package openfl.director``: the generated code speaks the same wire names as OpenFL's director.

The generated modules are loaded dynamically and are untyped; ``Any`` stays inside bench/.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO_ROOT / "proto" / "openfl" / "director"
PROTO_FILE = PROTO_DIR / "director.proto"
CACHE_ROOT = Path(__file__).resolve().parent / ".cache"


def _cache_dir() -> Path:
    key = hashlib.sha256(PROTO_FILE.read_bytes())
    key.update(importlib.metadata.version("grpcio-tools").encode())
    return CACHE_ROOT / f"grpcio-{key.hexdigest()[:16]}"


def generate() -> Path:
    """Generate the grpcio modules unless the cache already holds them; return their folder."""
    target = _cache_dir()
    if (target / "director_pb2_grpc.py").is_file():
        return target
    import grpc_tools  # bench-only dependency (the dev extra)

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".gen-", dir=CACHE_ROOT))
    try:
        subprocess.run(
            [
                sys.executable, "-m", "grpc_tools.protoc",
                f"-I{PROTO_DIR}", f"-I{well_known}",
                f"--python_out={scratch}", f"--grpc_python_out={scratch}",
                PROTO_FILE.name,
            ],
            check=True,
            cwd=PROTO_DIR,
        )  # fmt: skip
        try:
            os.replace(scratch, target)  # atomic: a concurrent run sees all or nothing
        except OSError:
            if not (target / "director_pb2_grpc.py").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def load() -> tuple[ModuleType, ModuleType]:
    """(director_pb2, director_pb2_grpc), generated first when needed."""
    folder = str(generate())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("director_pb2"), importlib.import_module("director_pb2_grpc")

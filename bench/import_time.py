"""``import shardclient`` from several source trees, in fresh interpreters, interleaved.

Each ``NAME=TREE`` imports shardclient with ``PYTHONPATH=TREE:TREE/generated`` in a new
interpreter (``python -X importtime`` is not used: it slows every import alike); the runs of
the trees alternate, so drift on a shared machine hits them alike. Prints each tree's median
and its ratio to the first tree's.

    git worktree add /tmp/base HEAD~3
    .venv/bin/python bench/import_time.py --runs 11 base=/tmp/base new=.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

_PROBE = "import time; t = time.perf_counter(); import shardclient; print(time.perf_counter() - t)"


def import_seconds(tree: Path) -> float:
    """Seconds one fresh interpreter takes to import shardclient from ``tree``."""
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{tree / 'generated'}")
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", metavar="NAME=TREE")
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, path in (t.split("=", 1) for t in args.trees)}
    for tree in trees.values():  # warm the file cache and the bytecode caches
        import_seconds(tree)
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, tree in trees.items():
            times[name].append(import_seconds(tree))
    first = statistics.median(next(iter(times.values())))
    print(f"| tree | median of {args.runs} (s) | ratio to {next(iter(trees))} |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / first:.2f} |")


if __name__ == "__main__":
    main()

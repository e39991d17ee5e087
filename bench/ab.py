"""A/B: shardclient from several source trees (and grpcio) against one server, interleaved.

On a shared machine whose speed drifts by 2x between minutes, only interleaved runs in one
invocation compare code versions fairly. Each ``NAME=TREE`` runs bench/worker.py with
``PYTHONPATH=TREE:TREE/generated``; a NAME starting with ``grpcio`` runs the grpcio client.

    git worktree add /tmp/base HEAD~3
    .venv/bin/python bench/ab.py health grpcio=. base=/tmp/base new=.
    .venv/bin/python bench/ab.py download --openfl --runs 9 grpcio=. base=/tmp/base new=.
    .venv/bin/python bench/ab.py iterate --runs 9 grpcio=. base=/tmp/base new=.

``--pin`` (Linux) keeps the server on CPU 0 and the clients on CPU 1, as if the director
ran on another machine: on two cores, a client's CPU otherwise also slows the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
if str(BENCH_DIR.parent) not in sys.path:
    sys.path.insert(1, str(BENCH_DIR.parent))

import compare  # noqa: E402  # its servers and worker protocol

CLIENT_CPUS: set[int] | None = None
"""With --pin: the CPUs the client processes may run on."""


def _pin_client() -> None:
    if CLIENT_CPUS is not None:
        os.sched_setaffinity(0, CLIENT_CPUS)


def worker(name: str, tree: Path, mode: str, port: int, *extra: str) -> list[str]:
    kind = "grpcio" if name.startswith("grpcio") else "ours"
    return [
        sys.executable, str(BENCH_DIR / "worker.py"), "--client", kind, "--mode", mode,
        "--port", str(port), "--shard", f"bench-{uuid.uuid4().hex[:6]}", *extra,
    ]  # fmt: skip


def environment(tree: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{tree / 'generated'}")


def health(variants: dict[str, Path], target: compare.Target, calls: int, block: int) -> None:
    processes = {
        name: subprocess.Popen(
            worker(name, tree, "health", target.port, "--warmup", "300"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment(tree),
            preexec_fn=_pin_client,
        )
        for name, tree in variants.items()
    }
    latencies: dict[str, list[int]] = {name: [] for name in variants}
    try:
        for name, process in processes.items():
            assert process.stdout is not None
            source = compare.read_json_line(process.stdout, process)["source"]
            print(f"  {name}: {source}")
        names = list(variants)
        for round_number in range(calls // block):
            for name in names if round_number % 2 == 0 else names[::-1]:
                process = processes[name]
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(f"{block}\n")
                process.stdin.flush()
                latencies[name] += compare.read_json_line(process.stdout, process)["latencies_ns"]
    finally:
        for process in processes.values():
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=60)
    first = None
    for name, values in latencies.items():
        values.sort()
        p50 = values[len(values) // 2] / 1e6
        first = first or p50
        p99 = values[int(len(values) * 0.99)] / 1e6
        print(f"  {name:12s} p50 {p50:.3f} ms  p99 {p99:.3f} ms  p50 / first {p50 / first:.2f}")


def transfer(
    variants: dict[str, Path], target: compare.Target, runs: int, dest: Path, mode: str
) -> None:
    """``mode`` download (saved to a file) or iterate (sync get_experiment_data), MB/s."""
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    extra = ["--dest", str(dest)] if mode == "download" else []
    for run in range(runs + 1):  # run 0 warms up
        for name in names if run % 2 == 0 else names[::-1]:
            tree = variants[name]
            command = worker(
                name, tree, mode, target.port, "--experiment", target.experiment, *extra
            )
            result = subprocess.run(
                command, stdout=subprocess.PIPE, text=True, env=environment(tree), timeout=600,
                check=True, preexec_fn=_pin_client,
            )  # fmt: skip
            record = json.loads(result.stdout.strip().splitlines()[-1])
            if record.get("sha256", target.sha256) != target.sha256:
                raise RuntimeError(f"{name} downloaded the wrong bytes")
            if run:
                speeds[name].append(record["bytes"] / record["seconds"] / compare.MB)
    first = None
    for name, values in speeds.items():
        median = statistics.median(values)
        first = first or median
        runs_text = " ".join(f"{v:.0f}" for v in values)
        print(f"  {name:12s} {median:6.0f} MB/s (runs: {runs_text})  / first {median / first:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["health", "download", "iterate"])
    parser.add_argument("variants", nargs="+", metavar="NAME=TREE")
    parser.add_argument("--openfl", action="store_true", help="the real OpenFL director")
    parser.add_argument("--size-mib", type=int, default=256, help="archive size (download)")
    parser.add_argument("--runs", type=int, default=5, help="downloads per variant")
    parser.add_argument("--calls", type=int, default=3000, help="health checks per variant")
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, clients on CPU 1")
    args = parser.parse_args()
    if args.pin:
        global CLIENT_CPUS
        CLIENT_CPUS = {1}
        os.sched_setaffinity(0, {0})  # this process, and the server it starts
    variants = {
        name: Path(tree).resolve() for name, tree in (v.split("=", 1) for v in args.variants)
    }
    size = args.size_mib if args.mode != "health" else 1
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir="/dev/shm")))
        if args.openfl:
            target = stack.enter_context(compare.openfl_server(size, workdir))
        else:
            target = stack.enter_context(compare.peer_server(size))
        print(target.label)
        if args.mode == "health":
            health(variants, target, args.calls, 100)
        else:
            transfer(variants, target, args.runs, workdir, args.mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())

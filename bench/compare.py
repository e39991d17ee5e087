"""Benchmark: shardclient's sync client against a grpcio client generated from the same proto.

One invocation measures both clients, alternating runs, against the same servers:

(a) a grpcio (C-core) server from the same proto serving an archive from memory in 2 MiB
    messages (bench/peer_server.py);
(b) the real OpenFL 1.6 director, when the interop venv (.interop/venv-1.6) exists.

For each client: health-check round trip p50/p99, download throughput (median of N
downloads), the sync get_experiment_data iteration's throughput, peak RSS of the client process; then the ratios ours/grpcio. Every measurement
runs in a fresh client process (bench/worker.py), so the two clients' memory is measured apart;
the two health-check processes are driven in alternating blocks.

    .venv/bin/python bench/compare.py                 # 256 MiB, 5 downloads, 1000 checks
    .venv/bin/python bench/compare.py --size-mib 16 --downloads 2 --health-checks 200
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))

import grpcio_stubs  # noqa: E402

from tests.interop import openfl_director  # noqa: E402

CLIENTS = ("ours", "grpcio")
HOST = "127.0.0.1"
MB = 1_000_000  # throughput is reported in MB/s (10**6 bytes per second)
MIB = 1024 * 1024


# --- results --------------------------------------------------------------------------


@dataclass
class ClientResult:
    health_latencies_ms: list[float] = field(default_factory=list)
    health_peak_rss_kib: int = 0
    download_mb_s: list[float] = field(default_factory=list)
    download_peak_rss_kib: list[int] = field(default_factory=list)
    download_rss_before_kib: list[int] = field(default_factory=list)
    iterate_mb_s: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        ordered = sorted(self.health_latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, float]:
        def med(values: list[int] | list[float]) -> float:
            return float(statistics.median(values)) if values else float("nan")

        return {
            "health_p50_ms": self.p(0.50),
            "health_p99_ms": self.p(0.99),
            "health_calls": len(self.health_latencies_ms),
            "download_mb_s_median": med(self.download_mb_s),
            "download_mb_s_min": min(self.download_mb_s, default=float("nan")),
            "download_mb_s_max": max(self.download_mb_s, default=float("nan")),
            "download_peak_rss_mib": max(self.download_peak_rss_kib, default=0) / 1024,
            "download_rss_before_mib": med(self.download_rss_before_kib) / 1024,
            "download_rss_growth_mib": med(
                [p - b for p, b in zip(self.download_peak_rss_kib, self.download_rss_before_kib)]
            )
            / 1024,
            "health_peak_rss_mib": self.health_peak_rss_kib / 1024,
            "iterate_mb_s_median": med(self.iterate_mb_s),
        }


@dataclass
class ServerResult:
    server: str
    archive_bytes: int
    clients: dict[str, ClientResult]

    def summaries(self) -> dict[str, dict[str, float]]:
        return {kind: result.summary() for kind, result in self.clients.items()}


@dataclass(frozen=True)
class Target:
    label: str
    port: int
    experiment: str
    size: int
    sha256: str


# --- workers --------------------------------------------------------------------------


def worker_command(kind: str, mode: str, port: int, shard: str, *extra: str) -> list[str]:
    return [
        sys.executable, str(BENCH_DIR / "worker.py"), "--client", kind, "--mode", mode,
        "--host", HOST, "--port", str(port), "--shard", shard, *extra,
    ]  # fmt: skip


def read_json_line(stream: IO[str], process: subprocess.Popen[str]) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        process.wait(timeout=30)
        raise RuntimeError(f"worker {process.args!r} exited with {process.returncode}")
    record: dict[str, Any] = json.loads(line)
    return record


def measure_health(
    target: Target, total: int, block: int, results: dict[str, ClientResult]
) -> None:
    """Two long-lived worker processes, driven in alternating blocks of ``block`` calls."""
    processes: dict[str, subprocess.Popen[str]] = {}
    try:
        for kind in CLIENTS:
            shard = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
            processes[kind] = subprocess.Popen(
                worker_command(kind, "health", target.port, shard),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        for kind, process in processes.items():
            assert process.stdout is not None
            ready = read_json_line(process.stdout, process)
            print(f"  {kind} client imported from {ready['source']}", flush=True)
        done = 0
        round_number = 0
        while done < total:
            count = min(block, total - done)
            order = CLIENTS if round_number % 2 == 0 else CLIENTS[::-1]
            for kind in order:
                process = processes[kind]
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(f"{count}\n")
                process.stdin.flush()
                record = read_json_line(process.stdout, process)
                results[kind].health_latencies_ms += [ns / 1e6 for ns in record["latencies_ns"]]
            done += count
            round_number += 1
        for kind, process in processes.items():
            assert process.stdin is not None and process.stdout is not None
            process.stdin.close()
            record = read_json_line(process.stdout, process)
            results[kind].health_peak_rss_kib = int(record["peak_rss_kib"])
            if process.wait(timeout=60) != 0:
                raise RuntimeError(f"{kind} health worker exited with {process.returncode}")
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def download_once(kind: str, target: Target, dest: Path) -> dict[str, Any]:
    shard = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    command = worker_command(
        kind, "download", target.port, shard,
        "--experiment", target.experiment, "--dest", str(dest),
    )  # fmt: skip
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} download worker exited with {result.returncode}")
    record: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if record["bytes"] != target.size or record["sha256"] != target.sha256:
        raise RuntimeError(
            f"{kind} downloaded {record['bytes']} bytes with sha256 {record['sha256']}; "
            f"expected {target.size} bytes, {target.sha256}"
        )
    return record


def measure_downloads(
    target: Target, downloads: int, warmup: int, dest: Path, results: dict[str, ClientResult]
) -> None:
    for _ in range(warmup):  # untimed: warms the server's caches and the page cache
        for kind in CLIENTS:
            download_once(kind, target, dest)
    for index in range(downloads):
        order = CLIENTS if index % 2 == 0 else CLIENTS[::-1]
        for kind in order:
            record = download_once(kind, target, dest)
            result = results[kind]
            result.download_mb_s.append(record["bytes"] / record["seconds"] / MB)
            result.download_peak_rss_kib.append(int(record["peak_rss_kib"]))
            result.download_rss_before_kib.append(int(record["rss_before_kib"]))
            print(
                f"  download {index + 1}/{downloads} {kind:>6}: "
                f"{result.download_mb_s[-1]:7.1f} MB/s, peak RSS "
                f"{record['peak_rss_kib'] / 1024:.0f} MiB",
                flush=True,
            )


def measure_iterations(target: Target, runs: int, results: dict[str, ClientResult]) -> None:
    """The sync client's get_experiment_data against grpcio's stream, alternating runs."""
    for index in range(runs + 1):  # the first round is untimed
        order = CLIENTS if index % 2 == 0 else CLIENTS[::-1]
        for kind in order:
            shard = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
            command = worker_command(kind, "iterate", target.port, shard,
                                     "--experiment", target.experiment)  # fmt: skip
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"{kind} iterate worker exited with {done.returncode}")
            record = json.loads(done.stdout.strip().splitlines()[-1])
            if record["bytes"] != target.size:
                raise RuntimeError(f"{kind} iterated {record['bytes']} of {target.size} bytes")
            if index:
                results[kind].iterate_mb_s.append(record["bytes"] / record["seconds"] / MB)
                print(f"  iterate {index}/{runs} {kind:>6}: "
                      f"{results[kind].iterate_mb_s[-1]:7.1f} MB/s, "
                      f"{record['threads']} threads", flush=True)  # fmt: skip


def measure(target: Target, args: argparse.Namespace, dest: Path) -> ServerResult:
    print(f"\n== {target.label} ==", flush=True)
    results = {kind: ClientResult() for kind in CLIENTS}
    if args.health_checks > 0:
        print(f"  {args.health_checks} health checks per client, alternating blocks", flush=True)
        measure_health(target, args.health_checks, args.block, results)
    if args.downloads > 0:
        measure_downloads(target, args.downloads, args.warmup_downloads, dest, results)
    if args.iterations > 0:
        measure_iterations(target, args.iterations, results)
    return ServerResult(server=target.label, archive_bytes=target.size, clients=results)


# --- servers --------------------------------------------------------------------------


@contextlib.contextmanager
def peer_server(size_mib: int) -> Iterator[Target]:
    process = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "peer_server.py"), "--size-mib", str(size_mib)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if len(line) != 4 or line[0] != "READY":
            raise RuntimeError(f"peer server did not start: {line!r}")
        yield Target(
            label=f"grpcio server from the same proto, {size_mib} MiB from memory in 2 MiB messages",
            port=int(line[1]),
            experiment="bench-experiment",
            size=int(line[2]),
            sha256=line[3],
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def openfl_server(size_mib: int, workdir: Path) -> Iterator[Target]:
    venv = openfl_director.ensure_openfl_venv()
    with contextlib.contextmanager(openfl_director.run_director)(
        venv, workdir / "director"
    ) as director:
        # Not a zip: the director's aggregator start fails, so the archive is kept and can be
        # downloaded again and again (GetExperimentData serves any experiment it registered).
        data = os.urandom(size_mib * MIB).replace(b"PK\x05\x06", b"pk\x05\x06")
        archive = workdir / "archive.bin"
        archive.write_bytes(data)
        name = f"bench-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        openfl_director.submit_experiment(
            director, name=name, collaborators=["bench-collaborator"], archive=archive
        )
        print(f"  submitted {size_mib} MiB experiment in {time.perf_counter() - started:.1f} s")
        target = Target(
            label=f"OpenFL 1.6 director (no TLS), {size_mib} MiB archive",
            port=director.port,
            experiment=name,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        del data
        archive.unlink()
        yield target


# --- report ---------------------------------------------------------------------------


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = ("shardclient", "grpclib", "h2", "hyperframe", "betterproto", "anyio", "grpcio",
                "protobuf")  # fmt: skip
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return {
        "commit": head or "?",
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": ", ".join(f"{p} {version(p)}" for p in packages),
    }


ROWS = (
    ("health check p50 (ms)", "health_p50_ms", "{:.3f}", "lower"),
    ("health check p99 (ms)", "health_p99_ms", "{:.3f}", "lower"),
    ("download MB/s (median)", "download_mb_s_median", "{:.0f}", "higher"),
    ("download MB/s (min)", "download_mb_s_min", "{:.0f}", "higher"),
    ("download MB/s (max)", "download_mb_s_max", "{:.0f}", "higher"),
    ("peak RSS, download process (MiB)", "download_peak_rss_mib", "{:.0f}", "lower"),
    ("RSS before download (MiB)", "download_rss_before_mib", "{:.0f}", "lower"),
    ("RSS growth in download (MiB)", "download_rss_growth_mib", "{:.0f}", "lower"),
    ("peak RSS, health process (MiB)", "health_peak_rss_mib", "{:.0f}", "lower"),
    ("sync get_experiment_data MB/s (median)", "iterate_mb_s_median", "{:.0f}", "higher"),
)


def table(result: ServerResult) -> str:
    summaries = result.summaries()
    ours, grpcio = summaries["ours"], summaries["grpcio"]
    lines = [
        f"| {result.server} | ours | grpcio | ours/grpcio |",
        "|---|---:|---:|---:|",
    ]
    for label, key, fmt, better in ROWS:
        a, b = ours[key], grpcio[key]
        ratio = f"{a / b:.2f}" if b and a == a and b == b else "-"
        lines.append(
            f"| {label} ({better} is better) | {fmt.format(a)} | {fmt.format(b)} | {ratio} |"
        )
    return "\n".join(lines)


def verdicts(results: list[ServerResult]) -> list[str]:
    lines = []
    for result in results:
        s = result.summaries()
        p50 = s["ours"]["health_p50_ms"] / s["grpcio"]["health_p50_ms"]
        lines.append(
            f"health p50 ours/grpcio vs {result.server.split(',')[0]}: {p50:.2f} "
            f"-> {'MET' if p50 <= 1.0 else 'NOT MET'} (target <= 1.00)"
        )
        if result.server.startswith("OpenFL"):
            mbs = s["ours"]["download_mb_s_median"] / s["grpcio"]["download_mb_s_median"]
            lines.append(
                f"download MB/s ours/grpcio vs OpenFL director: {mbs:.2f} "
                f"-> {'MET' if mbs >= 1.0 else 'NOT MET'} (target >= 1.00)"
            )
        else:
            it = s["ours"]["iterate_mb_s_median"] / s["grpcio"]["iterate_mb_s_median"]
            lines.append(
                f"sync iteration MB/s ours/grpcio vs the grpcio server: {it:.2f} "
                f"-> {'MET' if it >= 0.9 else 'NOT MET'} (target >= 1.00; 0.9 within noise)"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="archive size (default 256)")
    parser.add_argument("--downloads", type=int, default=5, help="timed downloads per client")
    parser.add_argument("--health-checks", type=int, default=1000, help="per client")
    parser.add_argument("--iterations", type=int, default=5,
                        help="timed get_experiment_data iterations per client")  # fmt: skip
    parser.add_argument("--block", type=int, default=100, help="health checks per alternation")
    parser.add_argument("--warmup-downloads", type=int, default=1, help="untimed, per client")
    parser.add_argument("--skip-openfl", action="store_true", help="only the grpcio server")
    parser.add_argument("--dest-dir", type=Path, default=None,
                        help="where downloads are written (default: /dev/shm when present)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
          f"{info['platform']}")  # fmt: skip
    print(f"packages: {info['packages']}")
    print(f"repository: {info['commit']}")
    command = "python bench/compare.py " + " ".join(sys.argv[1:])
    print(f"command: {command}")
    grpcio_stubs.generate()  # once, before the workers load it

    dest_parent = args.dest_dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    results: list[ServerResult] = []
    with tempfile.TemporaryDirectory(prefix="shardclient-bench-", dir=dest_parent) as dest_name, \
            tempfile.TemporaryDirectory(prefix="shardclient-bench-director-") as work_name:  # fmt: skip
        dest = Path(dest_name)
        print(f"downloads written to {dest} (both clients: file + sha256 + fsync + rename)")
        with peer_server(args.size_mib) as target:
            results.append(measure(target, args, dest))
        venv_exists = (openfl_director.VENV_DIR / openfl_director.READY_MARKER).is_file()
        if args.skip_openfl:
            print("\n(OpenFL director skipped: --skip-openfl)")
        elif not venv_exists:
            print(f"\n(OpenFL director skipped: no interop venv at {openfl_director.VENV_DIR})")
        else:
            with openfl_server(args.size_mib, Path(work_name)) as target:
                results.append(measure(target, args, dest))

    print()
    for result in results:
        print(table(result))
        print()
    for line in verdicts(results):
        print(line)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": info,
                    "results": [
                        {"server": r.server, "archive_bytes": r.archive_bytes,
                         "summary": r.summaries(),
                         "raw": {k: asdict(v) for k, v in r.clients.items()}}
                        for r in results
                    ],
                },
                indent=1,
            )
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

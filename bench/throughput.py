"""Download throughput: shardclient's download path against a grpcio (C-core) client.

Starts bench/peer_server.py (a grpcio server streaming N MiB from memory in 2 MiB messages)
or, with --openfl, the real OpenFL 1.6 director (both through bench/compare.py's helpers),
then times, in one process and one run, downloads by shardclient's async client in several
variants (below) and by bench/worker.py's grpcio client (same work: write, SHA-256, fsync).
Prints MB/s (median), the ratio to grpcio, client CPU seconds and peak RSS growth. Unlike
bench/compare.py it can switch each optimization off, and profile one download.

Variants: plain (grpclib's public API, no tuning), prefix (length prefix read first, body
decoded off the stream), tuned (plus the per-connection h2 tuning and overlapped writes),
tuned-sync (writes not overlapped), tuned-16k (16 KiB frames).

    .venv/bin/python bench/throughput.py --mib 256 --runs 5
    .venv/bin/python bench/throughput.py --openfl            # against the real director
    .venv/bin/python bench/throughput.py --profile tuned      # cProfile one download
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

import compare  # noqa: E402  # bench/compare.py: its servers (grpcio peer, OpenFL director)


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux) and return the current RSS in bytes."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Result:
    """One client variant's timings (s) and peak RSS growths (bytes)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self.rss: list[int] = []

    def mbps(self, size: int) -> float:
        return size / statistics.median(self.seconds) / 1e6


def set_variant(name: str) -> None:
    """Switch shardclient's download path: plain (public grpclib API), prefix (the length
    prefix read before the body, no h2 tuning), tuned (everything)."""
    from shardclient._client import download
    from shardclient._client.http2.guards import switches

    switches.reader = name != "plain"
    switches.tuning = name.startswith("tuned")
    download.overlap_writes = name != "tuned-sync"
    switches.max_frame_size = None if name == "tuned-16k" else 1024 * 1024


async def download_ours(target: Any, folder: Path) -> str:
    from shardclient._client.interactive_aio import AsyncShardDirectorClient

    async with AsyncShardDirectorClient(
        director_host="127.0.0.1", director_port=target.port, shard_name="bench", tls=False
    ) as client:
        result = await client.download_experiment(target.experiment, folder)
    result.path.unlink()
    return result.sha256


def download_grpcio(target: Any, folder: Path) -> str:
    """bench/worker.py's grpcio client: OpenFL's usage plus the same file work as ours."""
    from worker import GrpcioClient

    client = GrpcioClient("127.0.0.1", target.port, "bench")
    try:
        path, _, digest = client.download(target.experiment, folder)
    finally:
        client.close()
    path.unlink()
    return digest


async def health_p50(port: int, count: int) -> float:
    from shardclient._client.interactive_aio import AsyncShardDirectorClient

    async with AsyncShardDirectorClient(
        director_host="127.0.0.1", director_port=port, shard_name="bench", tls=False
    ) as client:
        times = []
        for _ in range(count + 20):
            started = time.perf_counter()
            await client.send_health_check(envoy_name="bench", is_experiment_running=False)
            times.append(time.perf_counter() - started)
    return statistics.median(times[20:]) * 1e3


def run(args: argparse.Namespace, runner: Callable[[Any], Any], target: Any) -> None:
    """Time every variant against ``target`` (a compare.Target), interleaved."""
    print(target.label)
    folder = Path(tempfile.mkdtemp(dir=args.dir, prefix="throughput-"))
    try:
        if args.profile:
            set_variant(args.profile)
            profiler = cProfile.Profile()
            profiler.enable()
            runner(download_ours(target, folder))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return
        variants = args.variants.split(",")
        results = {name: Result() for name in variants}
        for _ in range(args.runs):  # interleaved, so drift hits every variant alike
            for name in variants:
                base = _reset_peak_rss()
                started, cpu = time.perf_counter(), time.process_time()
                if name == "grpcio":
                    digest = download_grpcio(target, folder)
                else:
                    set_variant(name)
                    digest = runner(download_ours(target, folder))
                results[name].seconds.append(time.perf_counter() - started)
                results[name].cpu.append(time.process_time() - cpu)
                results[name].rss.append(_status_kib("VmHWM") * 1024 - base)
                if digest != target.sha256:
                    raise SystemExit(f"{name}: wrong bytes")
        loop = "uvloop" if args.uvloop else "asyncio"
        print(f"{args.mib} MiB, median of {args.runs}, {loop}, files in {args.dir}:")
        reference = results["grpcio"].mbps(target.size) if "grpcio" in results else None
        for name, result in results.items():
            mbps = result.mbps(target.size)
            ratio = f"  ratio {mbps / reference:.2f}" if reference else ""
            print(
                f"  {name:10} {mbps:5.0f} MB/s{ratio}  "
                f"client CPU {statistics.median(result.cpu):5.2f} s  "
                f"peak RSS growth {max(result.rss) / 2**20:5.1f} MiB"
            )
        if args.health:
            for name in variants:
                if name != "grpcio":
                    set_variant(name)
                    p50 = runner(health_p50(target.port, args.health))
                    print(f"  health check p50 ({name}): {p50:.3f} ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--variants", default="plain,prefix,tuned,grpcio")
    parser.add_argument("--openfl", action="store_true", help="the real OpenFL 1.6 director")
    parser.add_argument("--profile", metavar="VARIANT", help="cProfile one download, print top")
    parser.add_argument("--health", type=int, default=0, help="health checks to time (p50)")
    parser.add_argument("--uvloop", action="store_true", help="run shardclient on uvloop")
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"), help="download folder")
    args = parser.parse_args()
    runner: Callable[[Any], Any] = asyncio.run
    if args.uvloop:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        runner = uvloop.run
    with contextlib.ExitStack() as stack:
        if args.openfl:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="throughput-")))
            target = stack.enter_context(compare.openfl_server(args.mib, workdir))
        else:
            target = stack.enter_context(compare.peer_server(args.mib))
        run(args, runner, target)


if __name__ == "__main__":
    main()

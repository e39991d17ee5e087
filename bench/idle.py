"""Benchmark: what an idle envoy costs, shardclient's against OpenFL's, in one run.

Against one real OpenFL director (health period 1 s), an envoy registers, sends health checks
and waits for an experiment that never comes, for --seconds (60 by default):
``shardclient run --download-only`` (this checkout's .venv) and ``fx envoy start`` (the
interop venv, created by the interop tests), one after the other. From /proc, after a warm-up:
peak RSS (VmHWM), threads, and CPU seconds per minute while idle.

    .venv/bin/python bench/idle.py                 # 60 s each
    .venv/bin/python bench/idle.py --seconds 20    # quick
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.interop import openfl_director  # noqa: E402

ENVOY_CONFIG = """\
params:
  cuda_devices: []
  install_requirements: false
shard_descriptor:
  template: idle_shard.IdleShard
"""

SHARD = """\
class IdleShard:
    sample_shape = ["28", "28"]
    target_shape = ["1"]
    dataset_description = "idle benchmark shard"
"""

WARMUP_S = 5.0


def _proc(pid: int) -> tuple[int, int, float]:
    """(peak RSS KiB, threads, CPU seconds) of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    peak = int(fields["VmHWM"].split()[0])
    threads = int(fields["Threads"])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return peak, threads, cpu


def measure(command: list[str], folder: Path, seconds: float) -> dict[str, float]:
    with open(folder / "envoy.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        time.sleep(WARMUP_S)  # start-up and registration are not what is measured
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited: {(folder / 'envoy.log').read_text()}")
        _, _, cpu_before = _proc(process.pid)
        time.sleep(seconds)  # the idle window itself
        peak, threads, cpu_after = _proc(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    return {
        "peak_rss_mib": peak / 1024,
        "threads": threads,
        "cpu_s_per_min": (cpu_after - cpu_before) * 60 / seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    venv = openfl_director.ensure_openfl_venv()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="shardclient-idle-") as work:
        root = Path(work)
        director = openfl_director.DirectorProcess(venv, root / "director", health_check_period=1)
        director.start()
        try:
            for name, command in {
                "shardclient run": [
                    str(REPO_ROOT / ".venv" / "bin" / "shardclient"),
                    "run",
                    "--download-only",
                ],
                "fx envoy start": [str(venv.fx), "envoy", "start"],
            }.items():
                folder = root / name.replace(" ", "-")
                folder.mkdir()
                (folder / "envoy_config.yaml").write_text(ENVOY_CONFIG)
                (folder / "idle_shard.py").write_text(SHARD)
                command = [
                    *command, "-n", folder.name, "-dh", openfl_director.HOST,
                    "-dp", str(director.port), "--disable-tls", "-ec", "envoy_config.yaml",
                ]  # fmt: skip
                results[name] = measure(command, folder, args.seconds)
                print(f"{name}: {results[name]}", flush=True)
        finally:
            director.stop()
    ours, theirs = results["shardclient run"], results["fx envoy start"]
    print(f"\n| idle envoy, {args.seconds:.0f} s, health period 1 s | shardclient run | "
          "fx envoy start | ratio |\n|---|---:|---:|---:|")  # fmt: skip
    for label, key, fmt in (
        ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
        ("threads", "threads", "{:.0f}"),
        ("CPU seconds per minute", "cpu_s_per_min", "{:.3f}"),
    ):
        print(f"| {label} | {fmt.format(ours[key])} | {fmt.format(theirs[key])} | "
              f"{ours[key] / theirs[key]:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what an idle envoy costs, shardclient's against OpenFL's, in one run.

Against one real OpenFL director, an envoy registers, sends health checks and waits for an
experiment that never comes, for --seconds (60 by default): ``shardclient run
--download-only`` (this checkout's .venv) and ``fx envoy start`` (the interop venv of that
OpenFL, created by the interop tests), one after the other. From /proc, after a warm-up: peak
RSS (VmHWM), threads, and CPU seconds per minute while idle.

    .venv/bin/python bench/idle.py                   # OpenFL 1.6, health period 1 s, 60 s each
    .venv/bin/python bench/idle.py --openfl 1.9      # OpenFL 1.9's Workflow API, period 2 s
    .venv/bin/python bench/idle.py --seconds 20      # quick
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

from tests.interop import openfl_director, workflow_federation  # noqa: E402

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

WORKFLOW_CONFIG = """\
settings:
  director_host: localhost
  director_port: {port}
params:
  install_requirements: false
{name}:
  private_attributes: idle_attributes.attributes
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


def measure(
    command: list[str], folder: Path, seconds: float, env: dict[str, str] | None = None
) -> dict[str, float]:
    with open(folder / "envoy.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, env=env,
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


def idle_interactive(root: Path, seconds: float) -> dict[str, dict[str, float]]:
    """Both envoys against OpenFL 1.6's director (health period 1 s)."""
    venv = openfl_director.ensure_openfl_venv()
    results: dict[str, dict[str, float]] = {}
    director = openfl_director.DirectorProcess(venv, root / "director", health_check_period=1)
    director.start()
    try:
        for name, command in {
            "shardclient run": [str(REPO_ROOT / ".venv" / "bin" / "shardclient"), "run",
                                "--download-only"],
            "fx envoy start": [str(venv.fx), "envoy", "start"],
        }.items():  # fmt: skip
            folder = root / name.replace(" ", "-")
            folder.mkdir()
            (folder / "envoy_config.yaml").write_text(ENVOY_CONFIG)
            (folder / "idle_shard.py").write_text(SHARD)
            command = [
                *command, "-n", folder.name, "-dh", openfl_director.HOST,
                "-dp", str(director.port), "--disable-tls", "-ec", "envoy_config.yaml",
            ]  # fmt: skip
            results[name] = measure(command, folder, seconds)
            print(f"{name}: {results[name]}", flush=True)
    finally:
        director.stop()
    return results


def idle_workflow(root: Path, seconds: float) -> dict[str, dict[str, float]]:
    """Both envoys against OpenFL 1.9's Workflow-API director (health period 2 s). OpenFL's
    fx has its envoy command only where ~/.openfl/experimental exists (what ``fx experimental
    activate`` writes): it gets a HOME of its own with that file."""
    venv = openfl_director.ensure_workflow_venv()
    home = root / "home"
    (home / ".openfl").mkdir(parents=True)
    (home / ".openfl" / "experimental").write_text("experimental")
    env = dict(os.environ, HOME=str(home), USER=os.environ.get("USER") or "idle-bench")
    results: dict[str, dict[str, float]] = {}
    director = workflow_federation.WorkflowDirector(venv, root / "director")
    director.start()
    try:
        for name, command in {
            "shardclient run": [str(REPO_ROOT / ".venv" / "bin" / "shardclient"), "run",
                                "--download-only"],
            "fx envoy start": [str(venv.fx), "envoy", "start"],
        }.items():  # fmt: skip
            envoy = name.replace(" ", "-")
            folder = root / envoy
            folder.mkdir()
            config = WORKFLOW_CONFIG.format(port=director.port, name=envoy)
            (folder / "envoy_config.yaml").write_text(config)
            (folder / "idle_attributes.py").write_text("attributes = {'rows': 0}\n")
            command = [*command, "-n", envoy, "-c", "envoy_config.yaml", "--disable-tls"]
            results[name] = measure(command, folder, seconds, env)
            print(f"{name}: {results[name]}", flush=True)
    finally:
        director.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--openfl", choices=["1.6", "1.9"], default="1.6")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shardclient-idle-") as work:
        if args.openfl == "1.9":
            results = idle_workflow(Path(work), args.seconds)
            period = workflow_federation.HEALTH_CHECK_PERIOD_S
        else:
            results = idle_interactive(Path(work), args.seconds)
            period = 1
    ours, theirs = results["shardclient run"], results["fx envoy start"]
    print(f"\n| idle envoy, OpenFL {args.openfl}, {args.seconds:.0f} s, health period "
          f"{period} s | shardclient run | fx envoy start | ratio |\n|---|---:|---:|---:|")  # fmt: skip
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

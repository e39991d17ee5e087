"""Run in a child process by test_memory.py: download an experiment and report peak RSS growth.

Prints one JSON object: {"size": bytes, "baseline": kB, "peak": kB}. The peak is VmHWM
after resetting it (Linux clear_refs) once the client is warmed up, so only the download
itself counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shardclient import ShardDirectorClient


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def main() -> None:
    host, port, dest, warmup, experiment = sys.argv[1:6]
    with ShardDirectorClient(
        director_host=host, director_port=int(port), shard_name="s1", tls=False
    ) as client:
        client.download_experiment(warmup, dest)  # imports, buffers, the connection
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        baseline = _status_kb("VmRSS")
        result = client.download_experiment(experiment, dest)
        peak = _status_kb("VmHWM")
    print(json.dumps({"size": result.size, "baseline": baseline, "peak": peak}))


if __name__ == "__main__":
    main()

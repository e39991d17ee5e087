"""One benchmark client process: ours (shardclient's sync client) or grpcio's generated stub.

Each client runs in a process of its own so that its memory is measured apart.

``--mode health``: registers the shard, sends ``--warmup`` untimed health checks, prints
``READY``, then for each line ``N`` read from stdin sends N health checks and prints one JSON
line with their round-trip times in nanoseconds; at end of input prints a final JSON line with
the process's peak RSS. compare.py drives two of these in alternating blocks.

``--mode download``: registers the shard (which opens the connection), then downloads the
experiment once into ``--dest`` and prints one JSON line. Both clients do the same work: write
every chunk to a temporary file, SHA-256 it, fsync, rename, fsync the folder (what our
``download_experiment`` does; the grpcio side does it by hand). The file is removed afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SAMPLE_SHAPE = ("28", "28")
TARGET_SHAPE = ("1",)
TIMEOUT_S = 60.0
# OpenFL's ShardDirectorClient passes these options to its grpcio channel.
CHANNEL_OPTIONS = [
    ("grpc.max_metadata_size", 32 * 2**20),
    ("grpc.max_send_message_length", 2**30),
    ("grpc.max_receive_message_length", 2**30),
]


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far, in KiB.

    VmHWM where Linux has it: getrusage's ru_maxrss keeps the high-water mark of the process
    that forked this one across exec (here: compare.py, which once held a whole archive), so it
    would charge the parent's memory to the client.
    """
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int:
    rss = _status_kib("VmRSS")
    return rss if rss is not None else -1


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


class Client:
    """What the benchmark does with a client, whichever kind it is."""

    def register(self) -> bool:
        raise NotImplementedError

    def health_check(self) -> int:
        raise NotImplementedError

    def download(self, experiment: str, dest: Path) -> tuple[Path, int, str]:
        raise NotImplementedError

    def iterate(self, experiment: str) -> int:
        """Iterate over the archive's chunks, keeping nothing; return the bytes seen."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class OursClient(Client):
    def __init__(self, host: str, port: int, shard: str) -> None:
        from shardclient import ShardDirectorClient

        self.shard = shard
        self.client = ShardDirectorClient(
            director_host=host, director_port=port, shard_name=shard, tls=False, timeout=TIMEOUT_S
        )

    def register(self) -> bool:
        from shardclient import StaticShardDescriptor

        descriptor = StaticShardDescriptor(
            sample_shape=[int(d) for d in SAMPLE_SHAPE],
            target_shape=[int(d) for d in TARGET_SHAPE],
            dataset_description="bench",
        )
        return self.client.report_shard_info(descriptor, cuda_devices=[])

    def health_check(self) -> int:
        return self.client.send_health_check(envoy_name=self.shard, is_experiment_running=False)

    def download(self, experiment: str, dest: Path) -> tuple[Path, int, str]:
        done = self.client.download_experiment(experiment, dest)
        return done.path, done.size, done.sha256

    def iterate(self, experiment: str) -> int:
        return sum(len(chunk.npbytes) for chunk in self.client.get_experiment_data(experiment))

    def close(self) -> None:
        self.client.close()


class GrpcioClient(Client):
    """grpcio's generated stub, used the way OpenFL's own ShardDirectorClient uses it."""

    def __init__(self, host: str, port: int, shard: str) -> None:
        import grpc
        import grpcio_stubs

        self.shard = shard
        self.pb2, pb2_grpc = grpcio_stubs.load()
        self.channel: Any = grpc.insecure_channel(f"{host}:{port}", options=CHANNEL_OPTIONS)
        self.stub: Any = pb2_grpc.DirectorStub(self.channel)

    def register(self) -> bool:
        pb2 = self.pb2
        shard_info = pb2.ShardInfo(
            node_info=pb2.NodeInfo(name=self.shard),
            shard_description="bench",
            n_samples=0,
            sample_shape=list(SAMPLE_SHAPE),
            target_shape=list(TARGET_SHAPE),
        )
        request = pb2.UpdateShardInfoRequest(shard_info=shard_info)
        accepted: bool = self.stub.UpdateShardInfo(request, timeout=TIMEOUT_S).accepted
        return accepted

    def health_check(self) -> int:
        request = self.pb2.UpdateEnvoyStatusRequest(name=self.shard, is_experiment_running=False)
        response = self.stub.UpdateEnvoyStatus(request, timeout=TIMEOUT_S)
        seconds: int = response.health_check_period.seconds
        return seconds

    def download(self, experiment: str, dest: Path) -> tuple[Path, int, str]:
        request = self.pb2.GetExperimentDataRequest(
            experiment_name=experiment, collaborator_name=self.shard
        )
        final = dest / f"{experiment}.zip"
        fd, temporary = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=dest)
        digest = hashlib.sha256()
        received = 0
        try:
            with open(fd, "wb", buffering=0) as out:
                for chunk in self.stub.GetExperimentData(request, timeout=TIMEOUT_S * 10):
                    data: bytes = chunk.npbytes
                    if chunk.size != len(data):
                        raise RuntimeError(f"chunk size field {chunk.size} != {len(data)}")
                    out.write(data)
                    digest.update(data)
                    received += len(data)
                os.fsync(out.fileno())
            os.replace(temporary, final)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        folder = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return final, received, digest.hexdigest()

    def iterate(self, experiment: str) -> int:
        request = self.pb2.GetExperimentDataRequest(
            experiment_name=experiment, collaborator_name=self.shard
        )
        chunks = self.stub.GetExperimentData(request, timeout=TIMEOUT_S * 10)
        return sum(len(chunk.npbytes) for chunk in chunks)

    def close(self) -> None:
        self.channel.close()


def make_client(kind: str, host: str, port: int, shard: str) -> Client:
    factories: dict[str, Callable[[str, int, str], Client]] = {
        "ours": OursClient,
        "grpcio": GrpcioClient,
    }
    return factories[kind](host, port, shard)


def client_source(kind: str) -> str:
    """Where the client's code was imported from (PYTHONPATH may point ours elsewhere)."""
    module = sys.modules.get("shardclient" if kind == "ours" else "grpc")
    return str(Path(module.__file__).parent) if module and module.__file__ else "?"


def run_health(client: Client, kind: str, warmup: int) -> None:
    for _ in range(warmup):
        client.health_check()
    emit({"ready": True, "source": client_source(kind)})
    for line in sys.stdin:
        count = int(line)
        latencies: list[int] = []
        clock = time.perf_counter_ns
        for _ in range(count):
            start = clock()
            client.health_check()
            latencies.append(clock() - start)
        emit({"latencies_ns": latencies})
    emit({"peak_rss_kib": peak_rss_kib(), "rss_kib": current_rss_kib()})


def run_download(client: Client, experiment: str, dest: Path) -> None:
    rss_before = current_rss_kib()
    peak_before = peak_rss_kib()
    start = time.perf_counter()
    path, size, sha256 = client.download(experiment, dest)
    seconds = time.perf_counter() - start
    peak_after = peak_rss_kib()
    path.unlink()
    emit(
        {
            "seconds": seconds,
            "bytes": size,
            "sha256": sha256,
            "rss_before_kib": rss_before,
            "peak_rss_before_kib": peak_before,
            "peak_rss_kib": peak_after,
        }
    )


def run_iterate(client: Client, experiment: str) -> None:
    start = time.perf_counter()
    size = client.iterate(experiment)
    seconds = time.perf_counter() - start
    emit({"seconds": seconds, "bytes": size, "threads": threading.active_count()})


def main() -> int:
    parser = argparse.ArgumentParser(description="one benchmark client process")
    parser.add_argument("--client", choices=["ours", "grpcio"], required=True)
    parser.add_argument("--mode", choices=["health", "download", "iterate"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--shard", required=True)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--experiment", default="")
    parser.add_argument("--dest", type=Path, default=None)
    args = parser.parse_args()

    client = make_client(args.client, args.host, args.port, args.shard)
    try:
        if not client.register():
            raise SystemExit(f"the server refused shard {args.shard!r}")
        if args.mode == "health":
            run_health(client, args.client, args.warmup)
        elif args.mode == "iterate":
            run_iterate(client, args.experiment)
        else:
            if args.dest is None or not args.experiment:
                parser.error("--mode download needs --experiment and --dest")
            run_download(client, args.experiment, args.dest)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

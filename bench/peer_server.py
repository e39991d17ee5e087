"""A grpcio (C-core) Director server from the same proto, for the benchmark.

Serves an archive of random bytes held in memory as ExperimentData messages of 2 MiB
(what the OpenFL director sends), accepts every UpdateShardInfo, answers UpdateEnvoyStatus
with a period, and WaitExperiment at once. Once it listens it prints one line,
``READY <port> <size> <sha256>``, and then serves until it is terminated.

    python bench/peer_server.py --size-mib 256
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
import grpcio_stubs

CHUNK = 2 * 1024 * 1024
EXPERIMENT_NAME = "bench-experiment"
HEALTH_CHECK_PERIOD_S = 5
# The OpenFL director's own channel options (openfl/transport/grpc/grpc_channel_options.py).
CHANNEL_OPTIONS = [
    ("grpc.max_metadata_size", 32 * 2**20),
    ("grpc.max_send_message_length", 2**30),
    ("grpc.max_receive_message_length", 2**30),
]


class Director:
    """The servicer: duck-typed for ``add_DirectorServicer_to_server``."""

    def __init__(self, pb2: Any, chunks: list[bytes]) -> None:
        self._pb2 = pb2
        # Built once: every download sends the same message objects from memory.
        self._messages = [pb2.ExperimentData(size=len(c), npbytes=c) for c in chunks]

    def UpdateShardInfo(self, request: Any, context: Any) -> Any:
        return self._pb2.UpdateShardInfoResponse(accepted=True)

    def WaitExperiment(self, request: Any, context: Any) -> Any:
        return self._pb2.WaitExperimentResponse(experiment_name=EXPERIMENT_NAME)

    def GetExperimentData(self, request: Any, context: Any) -> Iterator[Any]:
        yield from self._messages

    def UpdateEnvoyStatus(self, request: Any, context: Any) -> Any:
        response = self._pb2.UpdateEnvoyStatusResponse()
        response.health_check_period.seconds = HEALTH_CHECK_PERIOD_S
        return response

    def SetExperimentFailed(self, request: Any, context: Any) -> Any:
        return self._pb2.SetExperimentFailedResponse()


def archive_bytes(size: int) -> bytes:
    """Random bytes; never a zip end-of-central-directory marker (like the director's archive)."""
    return os.urandom(size).replace(b"PK\x05\x06", b"pk\x05\x06")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    pb2, pb2_grpc = grpcio_stubs.load()
    data = archive_bytes(args.size_mib * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    del data
    servicer = Director(pb2, chunks)
    del chunks

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.workers), options=CHANNEL_OPTIONS
    )
    pb2_grpc.add_DirectorServicer_to_server(servicer, server)
    port: int = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda signum, frame: server.stop(0))
    print(f"READY {port} {args.size_mib * 1024 * 1024} {digest}", flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())

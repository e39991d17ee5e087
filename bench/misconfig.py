"""How long a call takes to fail, with the default options, against a peer that is not a gRPC
director, or a director whose TLS setting differs from the client's; and what it says.

Each case starts its peer on loopback and times one ``report_shard_info`` from a fresh
client (default timeout, keepalive and retries), in this process:

- an HTTP/1 server that answers and keeps the connection open;
- a server that sends bytes that are not HTTP/2 and keeps the connection open;
- a TLS server where the client speaks plain text (a LocalDirector with TLS);
- a plain-text director where the client speaks TLS.

    .venv/bin/python bench/misconfig.py
    PYTHONPATH=/tmp/base:/tmp/base/generated .venv/bin/python bench/misconfig.py  # another tree
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from shardclient import AsyncShardDirectorClient, StaticShardDescriptor  # noqa: E402
from shardclient._client.tls import server_ssl_context  # noqa: E402
from shardclient.testing import LocalDirector  # noqa: E402
from tests.helpers.certs import Pki, make_pki  # noqa: E402
from tests.helpers.hostile import HTTP1_REPLY, HostileServer, garbage  # noqa: E402

DESCRIPTOR = StaticShardDescriptor(sample_shape=[28, 28], target_shape=[1])


@asynccontextmanager
async def hostile(payload: bytes) -> AsyncIterator[int]:
    async with HostileServer(garbage(payload)) as server:
        yield server.port


@asynccontextmanager
async def director(tls: Pki | None) -> AsyncIterator[int]:
    context = None
    if tls is not None:
        context = server_ssl_context(
            root_certificate=tls.ca_cert, private_key=tls.server.key, certificate=tls.server.cert
        )
    async with LocalDirector(sample_shape=["28", "28"], target_shape=["1"], tls=context) as local:
        yield local.port


async def one(peer: AbstractAsyncContextManager[int], tls: Pki | None) -> tuple[float, str]:
    async with peer as port:
        async with AsyncShardDirectorClient(
            director_host="localhost",
            director_port=port,
            shard_name="envoy-one",
            tls=tls is not None,
            root_certificate=tls.ca_cert if tls else None,
            private_key=tls.client.key if tls else None,
            certificate=tls.client.cert if tls else None,
        ) as client:
            started = time.monotonic()
            try:
                await client.report_shard_info(DESCRIPTOR)
                outcome = "succeeded"
            except Exception as exc:  # noqa: BLE001 - what it says is what is measured
                outcome = f"{type(exc).__name__}: {exc}"
            return time.monotonic() - started, outcome


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        pki = make_pki(Path(folder), client_name="envoy-one")
        cases: dict[str, Callable[[], tuple[AbstractAsyncContextManager[int], Pki | None]]] = {
            "HTTP/1 server": lambda: (hostile(HTTP1_REPLY), None),
            "bytes that are not HTTP/2": lambda: (hostile(b"\xff" * 64), None),
            "TLS director, plain client": lambda: (director(pki), None),
            "plain director, TLS client": lambda: (director(None), pki),
        }
        print("| peer | seconds to fail | what the error says |\n|---|---:|---|")
        for label, make in cases.items():
            peer, tls = make()
            seconds, outcome = await one(peer, tls)
            print(f"| {label} | {seconds:.2f} | {outcome[:300]} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

"""Broken or hostile directors end in a clear ShardClientError in bounded time: no hang, no
unbounded buffer, no partial file. Each test bounds itself with anyio.fail_after."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest
from grpclib.const import Status

from shardclient import (
    AsyncShardDirectorClient,
    CorruptExperimentDataError,
    DirectorProtocolError,
    DirectorRPCError,
    DirectorTimeoutError,
    DirectorUnavailableError,
    RetryPolicy,
    StaticShardDescriptor,
    TLSHandshakeError,
)
from shardclient._client.http2 import guards
from tests.helpers.hostile import (
    HTTP1_REPLY,
    H2Script,
    Handler,
    HostileServer,
    chunk,
    garbage,
    grpc_frame,
    h2_server,
    silent,
)

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
LIMIT = 10.0  # seconds any single test may take before it counts as a hang


def _client(server: HostileServer, **options: object) -> AsyncShardDirectorClient:
    settings: dict[str, object] = {"timeout": 0.5, "retry": None}
    settings.update(options)
    return AsyncShardDirectorClient(
        director_host="127.0.0.1",
        director_port=server.port,
        shard_name="s1",
        tls=False,
        **settings,  # type: ignore[arg-type]  # options vary per test
    )


@pytest.fixture(params=[True, False], ids=["fast-path", "public-path"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test with recv_chunk's fast path and with grpclib's public path."""
    fast: bool = request.param
    monkeypatch.setattr(guards.switches, "reader", fast)
    return fast


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "keep.txt").write_text("unrelated")
    return folder


async def _download(client: AsyncShardDirectorClient, dest: Path) -> None:
    async with client:
        with anyio.fail_after(LIMIT):
            await client.download_experiment("exp", dest)


async def test_honest_stream_downloads(read_path: bool, dest: Path) -> None:
    payload = b"abc" * 1000
    script = H2Script(body=chunk(payload) + chunk(b"tail"))
    async with HostileServer(h2_server(script)) as server, _client(server) as client:
        result = await client.download_experiment("exp", dest)
    assert result.size == len(payload) + 4
    assert result.path.read_bytes() == payload + b"tail"


async def test_message_over_the_cap(read_path: bool, dest: Path) -> None:
    script = H2Script(body=chunk(b"x" * (2 * MiB)))
    async with HostileServer(h2_server(script)) as server:
        with pytest.raises(DirectorRPCError) as caught:
            await _download(_client(server, max_message_size=MiB, timeout=5), dest)
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert "max_message_size=1048576" in str(caught.value)
    assert _listing(dest) == ["keep.txt"]


async def test_length_prefix_claiming_a_gigabyte_is_refused_before_buffering(
    dest: Path,
) -> None:
    lie = grpc_frame(b"y" * 65536, declared_length=2**30)
    async with HostileServer(h2_server(H2Script(body=lie, then="stall"))) as server:
        with pytest.raises(DirectorRPCError) as caught:
            await _download(_client(server, timeout=5), dest)
    assert caught.value.status is Status.RESOURCE_EXHAUSTED
    assert _listing(dest) == ["keep.txt"]


@pytest.mark.parametrize(
    ("payload", "diagnosis"),
    [(HTTP1_REPLY, "HTTP/1, not HTTP/2"), (b"\xff" * 64, "bytes that are not HTTP/2")],
    ids=["http1", "binary"],
)
async def test_garbage_instead_of_http2(
    read_path: bool, dest: Path, payload: bytes, diagnosis: str
) -> None:
    async with HostileServer(garbage(payload)) as server:
        with pytest.raises(DirectorProtocolError, match=diagnosis) as caught:
            await _download(_client(server), dest)
    assert f"127.0.0.1:{server.port}" in str(caught.value)
    assert _listing(dest) == ["keep.txt"]


async def test_long_poll_against_garbage_ends() -> None:
    async with HostileServer(garbage(HTTP1_REPLY)) as server:
        policy = RetryPolicy(max_attempts=5, initial_delay=0, max_delay=0, jitter=0)
        async with _client(
            server, retry=policy, keepalive_time=0.2, keepalive_timeout=0.3
        ) as client:
            with anyio.fail_after(LIMIT), pytest.raises(DirectorProtocolError, match="HTTP/1"):
                await client.wait_experiment()


async def test_garbage_is_not_retried() -> None:
    async with HostileServer(garbage(HTTP1_REPLY)) as server:
        policy = RetryPolicy(max_attempts=5, initial_delay=0, max_delay=0, jitter=0)
        async with _client(server, retry=policy, timeout=0.3) as client:
            with anyio.fail_after(LIMIT), pytest.raises(DirectorProtocolError):
                await client.report_shard_info(
                    StaticShardDescriptor(sample_shape=[1], target_shape=[1]), []
                )


async def test_connection_cut_mid_message(read_path: bool, dest: Path) -> None:
    cut = chunk(b"a" * 1000) + grpc_frame(b"b" * 100, declared_length=1000)
    async with HostileServer(h2_server(H2Script(body=cut, then="close"))) as server:
        with pytest.raises(DirectorUnavailableError, match="lost"):
            await _download(_client(server), dest)
    assert _listing(dest) == ["keep.txt"]


async def test_stream_ended_mid_message(read_path: bool, dest: Path) -> None:
    cut = chunk(b"a" * 1000) + grpc_frame(b"b" * 100, declared_length=1000)
    async with HostileServer(h2_server(H2Script(body=cut, then="end"))) as server:
        with pytest.raises(DirectorProtocolError, match="middle of a message"):
            await _download(_client(server), dest)
    assert _listing(dest) == ["keep.txt"]


async def test_stall_mid_stream(read_path: bool, dest: Path) -> None:
    script = H2Script(body=chunk(b"first chunk"), then="stall")
    async with HostileServer(h2_server(script)) as server:
        with pytest.raises(DirectorTimeoutError):
            await _download(_client(server, timeout=0.3), dest)
    assert _listing(dest) == ["keep.txt"]


async def test_size_field_that_lies(read_path: bool, dest: Path) -> None:
    script = H2Script(body=chunk(b"good") + chunk(b"abc", size=10))
    async with HostileServer(h2_server(script)) as server:
        with pytest.raises(CorruptExperimentDataError, match="size field says 10"):
            await _download(_client(server), dest)
    assert _listing(dest) == ["keep.txt"]


OVERLONG_VARINT = b"\x08" + b"\xff" * 11  # field 1, a varint longer than 10 bytes


async def test_malformed_reply_to_a_unary_call() -> None:
    script = H2Script(body=grpc_frame(OVERLONG_VARINT))
    async with HostileServer(h2_server(script)) as server, _client(server) as client:
        with anyio.fail_after(LIMIT), pytest.raises(DirectorProtocolError, match="malformed"):
            await client.wait_experiment()


async def test_malformed_chunk(read_path: bool, dest: Path) -> None:
    script = H2Script(body=chunk(b"good") + grpc_frame(OVERLONG_VARINT))
    async with HostileServer(h2_server(script)) as server:
        with pytest.raises(DirectorProtocolError, match="malformed"):
            await _download(_client(server), dest)
    assert _listing(dest) == ["keep.txt"]


async def test_silent_server_unary_call_times_out() -> None:
    async with HostileServer(silent) as server, _client(server, timeout=0.3) as client:
        with anyio.fail_after(LIMIT), pytest.raises(DirectorTimeoutError):
            await client.send_health_check(envoy_name="s1", is_experiment_running=False)


async def test_silent_server_long_poll_is_ended_by_keepalive() -> None:
    async with HostileServer(silent) as server:
        async with _client(server, keepalive_time=0.2, keepalive_timeout=0.3) as client:
            with (
                anyio.fail_after(LIMIT),
                pytest.raises(
                    DirectorUnavailableError,
                    match=r"stopped answering \(a keepalive ping went unanswered for 0.3 s\)",
                ),
            ):
                await client.wait_experiment()


async def test_error_status_after_some_chunks(read_path: bool, dest: Path) -> None:
    script = H2Script(body=chunk(b"one") + chunk(b"two"), status=13, message="disk full")
    async with HostileServer(h2_server(script)) as server:
        with pytest.raises(DirectorRPCError, match="disk full") as caught:
            await _download(_client(server), dest)
    assert caught.value.status is Status.INTERNAL
    assert _listing(dest) == ["keep.txt"]


@pytest.mark.parametrize(
    ("body", "call", "problem"),
    [
        (b"\x08\x05", "wait", "experiment_name: a string sent with wire type 0"),
        (b"\x0a\x05ab", "wait", "WaitExperimentResponse.experiment_name: 5 bytes announced"),
        (b"\x08", "register", "UpdateShardInfoResponse.accepted: truncated varint"),
        (b"\x0a\x01\x08", "health", "Duration.seconds: truncated varint"),
        (b"\x0a\x03\xff\xfe\xfd", "wait", "malformed WaitExperimentResponse"),  # not UTF-8
    ],
    ids=["wrong-wire-type", "truncated-name", "truncated-varint", "nested-truncated", "not-utf8"],
)
async def test_replies_betterproto_would_misread_are_refused(
    body: bytes, call: str, problem: str
) -> None:
    async with HostileServer(h2_server(H2Script(body=grpc_frame(body)))) as server:
        async with _client(server) as client:
            with anyio.fail_after(LIMIT), pytest.raises(DirectorProtocolError, match=problem):
                if call == "wait":
                    await client.wait_experiment()
                elif call == "register":
                    await client.report_shard_info(
                        StaticShardDescriptor(sample_shape=[1], target_shape=[1]), []
                    )
                else:
                    await client.send_health_check(envoy_name="s1", is_experiment_running=False)


async def test_a_peer_breaking_http2_is_a_protocol_error_at_once() -> None:
    """Not a lost connection to retry: the peer is broken (no GOAWAY came from it)."""
    script = H2Script(body=b"", then="break")
    async with HostileServer(h2_server(script)) as server:
        policy = RetryPolicy(max_attempts=5, initial_delay=5, max_delay=5, jitter=0)
        async with _client(server, retry=policy) as client:
            with anyio.fail_after(4):  # a retry would wait 5 s
                with pytest.raises(DirectorProtocolError, match="[Pp]rotocol"):
                    await client.wait_experiment()


async def test_goaway_then_the_call_s_status_is_a_lost_connection() -> None:
    """gRPC C-core's too_many_pings: GOAWAY, then the call's trailers, which h2 refuses (h2
    closed its state): the director closed the connection, a retryable loss."""
    script = H2Script(body=b"", then="goaway")
    async with HostileServer(h2_server(script)) as server, _client(server) as client:
        with anyio.fail_after(LIMIT), pytest.raises(DirectorUnavailableError) as caught:
            await client.wait_experiment()
    assert "GOAWAY" in str(caught.value)
    assert not isinstance(caught.value, DirectorProtocolError)


def _closing(payload: bytes) -> Handler:
    """Answer every connection with ``payload``, then close it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()

    return handle


TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x46"  # what a TLS server answers bytes that are not TLS


@pytest.mark.parametrize("closes", [False, True], ids=["kept-open", "closed"])
@pytest.mark.parametrize(
    ("payload", "expected", "said"),
    [
        (HTTP1_REPLY, DirectorProtocolError, "answered in HTTP/1, not HTTP/2"),
        (b"\xff" * 64, DirectorProtocolError, "sent bytes that are not HTTP/2"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", DirectorProtocolError, "sent bytes that are not HTTP/2"),
        (TLS_ALERT, TLSHandshakeError, "speaks TLS; this envoy was started with --disable-tls"),
    ],
    ids=["http1", "binary", "ssh", "tls-record"],
)
async def test_not_a_director_is_said_at_once_with_the_default_options(
    payload: bytes, expected: type[Exception], said: str, closes: bool
) -> None:
    """The first bytes tell: no deadline, keepalive or retry is waited for (the default
    options: a 30 s deadline and a minute of retries), whether or not the peer closes."""
    handler = _closing(payload) if closes else garbage(payload)
    async with HostileServer(handler) as server, AsyncShardDirectorClient(
        director_host="127.0.0.1", director_port=server.port, shard_name="s1", tls=False
    ) as client:  # fmt: skip
        with anyio.fail_after(LIMIT), pytest.raises(expected, match=said) as caught:
            await client.report_shard_info(
                StaticShardDescriptor(sample_shape=[1], target_shape=[1])
            )
    assert f"127.0.0.1:{server.port}" in str(caught.value)

"""The download fast paths (shardclient._client.http2): same frames, same errors, same downloads
as plain grpclib; only our connections are touched; a structural mismatch falls back with
one warning; on the tested versions (.ci/constraints.txt) both paths must be on."""

from __future__ import annotations

import importlib.metadata
import itertools
import logging
import re
import types
from collections.abc import Iterator
from pathlib import Path

import anyio
import h2.exceptions
import hyperframe.frame
import pytest
from grpclib.client import Channel
from grpclib.config import Configuration
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from shardclient import AsyncShardDirectorClient, ShardClientError
from shardclient._client.http2 import channel as tuned_channel
from shardclient._client.http2 import guards
from shardclient._log import OnceLog
from shardclient.testing import LocalDirector
from tests.helpers.hostile import H2Script, HostileServer, chunk, grpc_frame, h2_server

MiB = 1024 * 1024


# --- the frame buffer -------------------------------------------------------------------


def _frame(kind: str, stream_id: int, payload: bytes, flag: bool) -> bytes:
    frame: Frame
    if kind == "data":
        frame = DataFrame(stream_id, payload, flags=["END_STREAM"] if flag else [])
        if flag and payload:
            frame.flags.add("PADDED")
            frame.pad_length = len(payload) % 7
    elif kind == "headers":
        frame = HeadersFrame(stream_id, payload, flags=[] if flag else ["END_HEADERS"])
    elif kind == "ping":
        frame = PingFrame(0, payload[:8].ljust(8, b"\0"))
    elif kind == "settings":
        frame = SettingsFrame(0, {4: len(payload)})
    elif kind == "window":
        frame = WindowUpdateFrame(stream_id, len(payload) + 1)
    elif kind == "rst":
        frame = RstStreamFrame(stream_id, 8)
    else:
        frame = GoAwayFrame(0, stream_id, 0, payload)
    return frame.serialize()


_wire = st.lists(
    st.one_of(
        st.builds(
            _frame,
            st.sampled_from(["data", "headers", "ping", "settings", "window", "rst", "goaway"]),
            st.integers(1, 9),
            st.binary(max_size=200),
            st.booleans(),
        ),
        st.binary(min_size=1, max_size=12),  # garbage: bad headers, lengths, types
    ),
    max_size=8,
).map(b"".join)


def _drain(buffer: FrameBuffer, pieces: list[bytes]) -> list[object]:
    """What a buffer yields for ``pieces``: frames as comparable tuples, then any error."""
    seen: list[object] = []
    try:
        for piece in pieces:
            buffer.add_data(piece)
            for frame in buffer:
                seen.append((type(frame), frame.stream_id, sorted(frame.flags), frame.serialize()))
    except h2.exceptions.ProtocolError as exc:
        seen.append((type(exc), str(exc)))
    return seen


@settings(max_examples=300)
@given(
    wire=_wire,
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    max_frame=st.sampled_from([16384, 64]),
)
def test_quiet_buffer_yields_what_h2_yields(wire: bytes, cuts: list[int], max_frame: int) -> None:
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    pieces = [wire[a:b] for a, b in itertools.pairwise(points)]
    plain, quiet = FrameBuffer(server=False), tuned_channel.QuietFrameBuffer(server=False)
    plain.max_frame_size = quiet.max_frame_size = max_frame
    assert _drain(quiet, pieces) == _drain(plain, pieces)


def test_data_frame_repr_is_constant_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    def hexlify_called(data: bytes) -> str:
        raise AssertionError("the payload was formatted")

    buffer = tuned_channel.QuietFrameBuffer(server=False)
    buffer.max_frame_size = MiB
    buffer.add_data(DataFrame(1, b"x" * MiB).serialize() + PingFrame(0, b"12345678").serialize())
    data, ping = list(buffer)
    monkeypatch.setattr(hyperframe.frame, "_raw_data_repr", hexlify_called)
    assert repr(data) == "DataFrame(stream_id=1, flags=[]): data=<not shown>"
    assert "opaque_data" in repr(ping)  # other frames keep their repr
    assert type(data) is DataFrame and data.data == b"x" * MiB


def test_plain_data_frames_skip_h2s_two_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse_body_called(self: DataFrame, data: memoryview) -> None:
        raise AssertionError("h2's path (slice, then tobytes) was taken")

    buffer = tuned_channel.QuietFrameBuffer(server=False)
    buffer.max_frame_size = MiB
    monkeypatch.setattr(DataFrame, "parse_body", parse_body_called)
    buffer.add_data(DataFrame(3, b"y" * MiB, flags=["END_STREAM"]).serialize())
    (frame,) = list(buffer)
    assert type(frame) is DataFrame and frame.data == b"y" * MiB
    assert frame.stream_id == 3 and "END_STREAM" in frame.flags
    assert frame.flow_controlled_length == MiB
    buffer.add_data(b"more")  # the buffer was not left exported: it can still grow
    assert list(buffer) == []


def test_nothing_global_is_patched() -> None:
    assert "_body_repr" not in vars(DataFrame)
    assert DataFrame._body_repr is Frame._body_repr
    assert FrameBuffer.__next__ is not tuned_channel.QuietFrameBuffer.__next__
    assert repr(DataFrame(1, b"\x01\x02")).endswith("<hex:0102>")


# --- channels -----------------------------------------------------------------------------


CONSTRAINTS = Path(__file__).resolve().parents[3] / ".ci" / "constraints.txt"


@pytest.fixture
def restore_paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("tuning", "reader", "max_frame_size"):
        monkeypatch.setattr(guards.switches, name, getattr(guards.switches, name))
    for name in ("_tuning_problem", "_stream_problem"):
        monkeypatch.setattr(guards, name, getattr(guards, name))
    monkeypatch.setattr(guards, "_fallbacks", OnceLog(guards.logger, "download fast path"))
    yield


def _tested_versions_installed() -> bool:
    pins = dict(
        line.split("==") for line in CONSTRAINTS.read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    return all(importlib.metadata.version(name) == version for name, version in pins.items())


def test_both_fast_paths_run_on_the_tested_versions(
    director: LocalDirector, tmp_path: Path
) -> None:
    """Fails (not skips) when the versions CI installs no longer fit a fast path."""
    if not _tested_versions_installed():
        pytest.skip("other grpclib/h2/hyperframe versions than .ci/constraints.txt pins")
    from shardclient import ShardDirectorClient

    director.submit_experiment("exp", b"data" * 1000, ["s1"])
    with ShardDirectorClient(director_host=director.host, director_port=director.port,
                             shard_name="s1", tls=False) as client:  # fmt: skip
        client.download_experiment("exp", tmp_path)
    assert guards.switches.tuning and guards.channel_tuning_problem() is None
    assert guards.switches.reader and guards.stream_problem() is None


@pytest.mark.anyio
async def test_only_our_connections_are_tuned(restore_paths: None) -> None:
    async with HostileServer(h2_server(H2Script(body=chunk(b"a")))) as server:
        ours = tuned_channel.open_channel(
            "127.0.0.1", server.port, ssl=None, config=Configuration()
        )
        theirs = Channel("127.0.0.1", server.port)
        try:
            for channel in (ours, theirs):
                await channel.__connect__()
            ours_h2 = ours._protocol.connection._connection  # type: ignore[union-attr]
            theirs_h2 = theirs._protocol.connection._connection  # type: ignore[union-attr]
            assert type(ours_h2.incoming_buffer) is tuned_channel.QuietFrameBuffer
            assert type(theirs_h2.incoming_buffer) is FrameBuffer
            assert ours_h2.local_settings.max_frame_size == guards.switches.max_frame_size
            assert theirs_h2.local_settings.max_frame_size == 16384
        finally:
            ours.close()
            theirs.close()


def test_a_structural_mismatch_falls_back_with_one_warning(
    restore_paths: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    director: LocalDirector, tmp_path: Path,
) -> None:  # fmt: skip
    # what the guards would find if h2 kept its frame buffer elsewhere, and grpclib its
    # stream state (only the guards' view of the classes is changed)
    monkeypatch.setattr(guards, "H2Connection", lambda: types.SimpleNamespace())
    monkeypatch.setattr(guards, "_tuning_problem", False)  # checked afresh
    assert (
        guards.channel_tuning_problem() == "H2Connection.incoming_buffer is not an h2 FrameBuffer"
    )
    assert guards.check_stream(types.SimpleNamespace()) == "no SimpleNamespace._stream"  # type: ignore[arg-type]  # a stream without grpclib's state
    monkeypatch.setattr(guards, "_stream_problem", "no Stream._wrapper")
    caplog.set_level(logging.WARNING, logger="shardclient")
    from shardclient import ShardDirectorClient

    director.submit_experiment("exp", b"abc" * 100_000, ["s1"])
    with ShardDirectorClient(director_host=director.host, director_port=director.port,
                             shard_name="s1", tls=False) as client:  # fmt: skip
        results = [client.download_experiment("exp", tmp_path) for _ in range(2)]
    assert [r.path.read_bytes() for r in results] == [b"abc" * 100_000] * 2
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("HTTP/2 download tuning is off" in w for w in warnings) == 1
    assert sum("off grpclib's buffer is off (no Stream._wrapper)" in w for w in warnings) == 1


# --- whole downloads: identical bytes and errors with and without the bypasses ------------

_SCRIPTS = {
    "honest": H2Script(body=chunk(b"abc" * 1000) + chunk(b"x" * MiB) + chunk(b"tail")),
    "empty": H2Script(body=b""),
    "over-cap": H2Script(body=chunk(b"x" * (2 * MiB))),
    "ended-mid-message": H2Script(
        body=chunk(b"a" * 1000) + grpc_frame(b"b" * 100, declared_length=1000), then="end"
    ),
    "ended-after-prefix": H2Script(
        body=chunk(b"a" * 10) + grpc_frame(b"", declared_length=50), then="end"
    ),
    "cut-mid-message": H2Script(
        body=chunk(b"a" * 1000) + grpc_frame(b"b" * 100, declared_length=1000), then="close"
    ),
    "size-lies": H2Script(body=chunk(b"good") + chunk(b"abc", size=10)),
    "unknown-field": H2Script(body=grpc_frame(b"\x12\x03abc\x08\x03\x18\x05")),
    "status-after-chunks": H2Script(
        body=chunk(b"one") + chunk(b"two"), status=13, message="disk full"
    ),
    "compressed": H2Script(body=b"\x01" + chunk(b"z")[1:]),
}


async def _outcome(port: int, dest: Path) -> tuple[object, ...]:
    client = AsyncShardDirectorClient(
        director_host="127.0.0.1",
        director_port=port,
        shard_name="s1",
        tls=False,
        timeout=2,
        retry=None,
        max_message_size=MiB + MiB // 2,
    )
    try:
        async with client:
            with anyio.fail_after(10):
                result = await client.download_experiment("exp", dest)
    except ShardClientError as exc:
        message = str(exc).replace(str(port), "PORT")
        # The read paths name different lengths for an oversized message: the fast path
        # the length prefix (before reading), the public path len(npbytes) (after).
        message = re.sub(r"\d+-byte", "N-byte", message)
        message = re.sub(r"message of \d+ bytes", "message of N bytes", message)
        return ("error", type(exc).__name__, message, getattr(exc, "status", None))
    data = result.path.read_bytes()
    result.path.unlink()
    return ("ok", data, result.size, result.sha256)


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(_SCRIPTS))
async def test_same_bytes_and_errors_with_and_without_bypasses(
    case: str, tmp_path: Path, restore_paths: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every case, on each path: the fallback (plain grpclib) is tested as well."""
    outcomes = {}
    async with HostileServer(h2_server(_SCRIPTS[case])) as server:
        for tuned in (True, False):
            for fast in (True, False):
                monkeypatch.setattr(guards.switches, "tuning", tuned)
                monkeypatch.setattr(guards.switches, "reader", fast)
                outcomes[tuned, fast] = await _outcome(server.port, tmp_path)
                assert list(tmp_path.iterdir()) == []
    plain = outcomes[False, False]
    assert all(outcome == plain for outcome in outcomes.values()), outcomes

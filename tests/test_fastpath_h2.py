"""The per-connection h2 tuning (shardclient.h2tuning): same frames, same errors, same
downloads as plain grpclib; only our connections are touched; other versions fall back."""

from __future__ import annotations

import logging
import re
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
from shardclient import h2tuning
from shardclient import stream as stream_module
from tests.hostile import H2Script, HostileServer, chunk, grpc_frame, h2_server

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
@given(wire=_wire, cuts=st.lists(st.integers(0, 2000), max_size=6), max_frame=st.sampled_from(
    [16384, 64]))
def test_quiet_buffer_yields_what_h2_yields(wire: bytes, cuts: list[int], max_frame: int) -> None:
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    pieces = [wire[a:b] for a, b in zip(points, points[1:])]
    plain, quiet = FrameBuffer(server=False), h2tuning.QuietFrameBuffer(server=False)
    plain.max_frame_size = quiet.max_frame_size = max_frame
    assert _drain(quiet, pieces) == _drain(plain, pieces)


def test_data_frame_repr_is_constant_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    def hexlify_called(data: bytes) -> str:
        raise AssertionError("the payload was formatted")

    buffer = h2tuning.QuietFrameBuffer(server=False)
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

    buffer = h2tuning.QuietFrameBuffer(server=False)
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
    assert FrameBuffer.__next__ is not h2tuning.QuietFrameBuffer.__next__
    assert repr(DataFrame(1, b"\x01\x02")).endswith("<hex:0102>")


# --- channels -----------------------------------------------------------------------------


@pytest.fixture
def restore_tuning(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(h2tuning, "use_tuning", h2tuning.use_tuning)
    monkeypatch.setattr(h2tuning, "_warned", False)
    yield


@pytest.mark.anyio
async def test_only_our_connections_are_tuned(restore_tuning: None) -> None:
    if not h2tuning.TUNING_VERIFIED:
        pytest.skip("h2/grpclib/hyperframe versions not verified for the tuning")
    async with HostileServer(h2_server(H2Script(body=chunk(b"a")))) as server:
        ours = h2tuning.open_channel("127.0.0.1", server.port, ssl=None, config=_config())
        theirs = Channel("127.0.0.1", server.port)
        try:
            for channel in (ours, theirs):
                await channel.__connect__()
            ours_h2 = ours._protocol.connection._connection  # type: ignore[union-attr]
            theirs_h2 = theirs._protocol.connection._connection  # type: ignore[union-attr]
            assert type(ours_h2.incoming_buffer) is h2tuning.QuietFrameBuffer
            assert type(theirs_h2.incoming_buffer) is FrameBuffer
            assert ours_h2.local_settings.max_frame_size == h2tuning.max_frame_size
            assert theirs_h2.local_settings.max_frame_size == 16384
        finally:
            ours.close()
            theirs.close()


def _config() -> Configuration:
    return Configuration()


def test_unverified_versions_fall_back_with_one_warning(
    restore_tuning: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(h2tuning, "TUNING_VERIFIED", False)
    monkeypatch.setattr(h2tuning, "use_tuning", False)
    caplog.set_level(logging.WARNING, logger="shardclient.h2tuning")
    channels: list[Channel] = []

    async def open_two() -> None:
        for _ in range(2):
            channels.append(h2tuning.open_channel("127.0.0.1", 1, ssl=None, config=Configuration()))
        for channel in channels:
            channel.close()

    anyio.run(open_two)
    assert [type(c) for c in channels] == [Channel, Channel]
    assert len(caplog.records) == 1 and "tuning is off" in caplog.records[0].getMessage()


def test_the_guard_names_exact_versions() -> None:
    assert h2tuning.VERIFIED_VERSIONS == {"grpclib": "0.4.9", "h2": "4.4.1", "hyperframe": "6.1.0"}


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
        director_host="127.0.0.1", director_port=port, shard_name="s1", tls=False,
        timeout=2, retry=None, max_message_size=MiB + MiB // 2,
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
    case: str, tmp_path: Path, restore_tuning: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (h2tuning.TUNING_VERIFIED and stream_module.FAST_PATH_VERIFIED):
        pytest.skip("versions not verified for the bypasses")
    outcomes = {}
    async with HostileServer(h2_server(_SCRIPTS[case])) as server:
        for tuned in (True, False):
            for fast in (True, False):
                monkeypatch.setattr(h2tuning, "use_tuning", tuned)
                monkeypatch.setattr(stream_module, "use_fast_path", fast)
                outcomes[tuned, fast] = await _outcome(server.port, tmp_path)
                assert list(tmp_path.iterdir()) == []
    plain = outcomes[False, False]
    assert all(outcome == plain for outcome in outcomes.values()), outcomes

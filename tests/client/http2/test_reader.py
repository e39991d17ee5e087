"""The fast reader's streaming chunk decoder against betterproto's parser (after the wire
check that refuses what betterproto would misread).

For any body and any split of it into HTTP/2 DATA pieces, the decoder (with chunks.as_message)
must give a message identical to ``ExperimentData().parse(body)`` (fields, unknown fields,
wire flag) or raise the same error; a body cut by END_STREAM must raise an AssertionError, as
grpclib's buffer does, which the client reports as a stream ended mid-message. The download's
variant (views, with chunks.as_raw) must give the same size and bytes, in pieces, or the same
error.
"""

from __future__ import annotations

import itertools
from typing import cast

import pytest
from grpclib.exceptions import ProtocolError
from grpclib.protocol import Buffer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardclient._client.chunks import ChunkType, as_message, as_raw
from shardclient._client.download import RawChunk
from shardclient._client.http2 import reader
from shardclient._client.wire import check_message
from shardclient.messages import ExperimentData

pytestmark = pytest.mark.anyio


class _RawStream:
    """The one method of grpclib's protocol.Stream the decoder uses, over a real Buffer."""

    def __init__(self, pieces: list[bytes], *, end: bool = True) -> None:
        self.buffer = Buffer(lambda size: None)
        for piece in pieces:
            self.buffer.add(piece, len(piece))
        if end:
            self.buffer.eof()

    async def recv_data(self, size: int) -> bytes:
        return await self.buffer.read(size)


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    return [body[a:b] for a, b in itertools.pairwise(points) if b > a]


CHUNK = ChunkType(ExperimentData, "npbytes")


async def _decode(pieces: list[bytes], length: int) -> ExperimentData:
    raw = cast(reader.RawStream, _RawStream(pieces))
    return as_message(await reader._decode(raw, length, views=False), CHUNK)


async def _decode_raw(pieces: list[bytes], length: int) -> RawChunk:
    raw = cast(reader.RawStream, _RawStream(pieces))
    return as_raw(await reader._decode(raw, length, views=True), CHUNK)


def _state(message: ExperimentData) -> dict[str, object]:
    try:
        serialized: object = bytes(message)
    except Exception as exc:  # betterproto keeps e.g. an int in npbytes
        serialized = type(exc)
    return {k: v for k, v in vars(message).items() if k != "_group_current"} | {
        "bytes": serialized,
        "npbytes_type": type(message.npbytes),
    }


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# A field: (tag, payload) pieces that make up protobuf-ish bodies, canonical and not.
_fields = st.one_of(
    st.integers(0, 2**64 - 1).map(lambda v: b"\x08" + _varint(v)),  # size
    st.binary(max_size=300).map(lambda b: b"\x12" + _varint(len(b)) + b),  # npbytes
    st.tuples(st.integers(3, 40), st.binary(max_size=20)).map(  # unknown, len-delimited
        lambda t: _varint(t[0] << 3 | 2) + _varint(len(t[1])) + t[1]
    ),
    st.tuples(st.integers(1, 40), st.integers(0, 2**70)).map(  # any field as a varint
        lambda t: _varint(t[0] << 3) + _varint(t[1])
    ),
    st.tuples(st.integers(1, 40), st.sampled_from([1, 5])).map(  # fixed64 / fixed32
        lambda t: _varint(t[0] << 3 | t[1]) + b"\x01" * (8 if t[1] == 1 else 4)
    ),
    st.just(b"\x88\x00\x05"),  # size with an overlong tag
    st.just(b"\x08\x80\x80\x00"),  # size with an overlong value
    st.binary(min_size=1, max_size=6),  # garbage, truncated varints, group tags
)


async def _both(body: bytes, cuts: list[int]) -> None:
    """The decoder gives what betterproto's parse gives, except that a body betterproto
    would misread (truncated, wrong wire types: shardclient._client.wire) is an error."""
    try:
        check_message(body, ExperimentData)
        expected: ExperimentData | Exception = ExperimentData().parse(body)
    except Exception as exc:  # the decoder must raise the same
        expected = exc
    try:
        got: ExperimentData | Exception = await _decode(_split(body, cuts), len(body))
    except Exception as exc:
        got = exc
    try:
        raw: RawChunk | Exception = await _decode_raw(_split(body, cuts), len(body))
    except Exception as exc:
        raw = exc
    if isinstance(expected, Exception):
        # betterproto's error, wrapped so that the client maps it to DirectorProtocolError
        for result in (got, raw):
            assert isinstance(result, ProtocolError), result
            assert str(result) == f"malformed ExperimentData message: {expected}"
            assert type(result.__cause__) is type(expected)
    else:
        assert isinstance(got, ExperimentData), got
        assert _state(got) == _state(expected)
        npbytes: object = expected.npbytes  # betterproto may leave e.g. an int there
        if isinstance(npbytes, bytes):
            assert isinstance(raw, RawChunk), raw
            assert raw.size == expected.size
            assert b"".join(raw.pieces) == expected.npbytes
            assert raw.length == len(expected.npbytes)
        else:  # betterproto left something else in the field: no archive bytes to write
            assert isinstance(raw, ProtocolError) and "npbytes is" in str(raw)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.lists(_fields, max_size=5), cuts=st.lists(st.integers(0, 10**6), max_size=6))
async def test_decodes_like_betterproto(fields: list[bytes], cuts: list[int]) -> None:
    await _both(b"".join(fields), cuts)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=64), cuts=st.lists(st.integers(0, 100), max_size=4))
async def test_arbitrary_bytes_decode_like_betterproto(body: bytes, cuts: list[int]) -> None:
    await _both(body, cuts)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        bytes(ExperimentData(size=3, npbytes=b"abc")),
        b"\x12\x03abc\x08\x03",  # fields in the other order
        b"\x08\x03",
        b"\x12\x00",
        b"\x12\x03abc\x12\x02xy",  # repeated: the last wins
        b"\x12\x03abc\x18\x07",  # an unknown field is kept
        b"\x12\x05abc",  # npbytes longer than the body: betterproto truncates, we refuse
    ],
    ids=[
        "empty",
        "canonical",
        "reversed",
        "size-only",
        "empty-npbytes",
        "repeated",
        "unknown",
        "truncated",
    ],
)
async def test_known_shapes(body: bytes) -> None:
    await _both(body, [1, 3])


async def test_canonical_chunk_reads_npbytes_in_one_piece() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    body = bytes(ExperimentData(size=len(payload), npbytes=payload))
    message = await _decode(_split(body, list(range(0, len(body), 16384))), len(body))
    assert message.size == len(payload) and message.npbytes == payload
    assert type(message.npbytes) is bytes


async def test_a_raw_chunk_is_views_of_the_frames_not_copies() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    body = bytes(ExperimentData(size=len(payload), npbytes=payload))
    frames = _split(body, list(range(0, len(body), 1 << 20)))
    chunk = await _decode_raw(frames, len(body))
    assert chunk.size == len(payload) and b"".join(chunk.pieces) == payload
    assert all(isinstance(piece, memoryview) for piece in chunk.pieces)
    owners = {id(piece.obj) for piece in chunk.pieces if isinstance(piece, memoryview)}
    assert owners <= {id(frame) for frame in frames}


@pytest.mark.parametrize("cut", [1, 2, 3, 7], ids=lambda c: f"after-{c}-bytes")
async def test_end_of_stream_inside_the_body_raises_assertion(cut: int) -> None:
    body = bytes(ExperimentData(size=4, npbytes=b"abcd"))
    with pytest.raises(AssertionError):
        await _decode([body[:cut]], len(body))
    with pytest.raises(AssertionError):
        await _decode_raw([body[:cut]], len(body))

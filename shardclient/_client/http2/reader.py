"""Reading archive chunks straight off grpclib's stream buffer.

grpclib reads a whole message into memory before anyone sees its length, joins its pieces,
and betterproto then copies the bytes field out of it. Here the 5-byte length prefix is read
first (an oversized message is refused before its body is buffered), and a canonical chunk
body (field 1 a varint size, field 2 the bytes, each at most once, in either order) is decoded
as it is read: the bytes copied once, or not at all (as views of the frames that carried
them). Any other body is returned whole, for betterproto to parse as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from grpclib import protocol
from grpclib.client import Stream

from shardclient._client.http2.guards import fall_back, stream_problem, switches
from shardclient._client.translate import compressed_message, message_too_large

__all__ = ["Fields", "can_read_fast", "recv_fast"]

RawStream = protocol.Stream
Pieces = list[bytes | memoryview]

_SIZE_TAG: Final = 0x08  # field 1 (size), varint
_DATA_TAG: Final = 0x12  # field 2 (the archive bytes), length-delimited


class Truncated(AssertionError):
    """The stream ended inside a message (grpclib's Buffer raises AssertionError alike)."""


@dataclass
class Fields:
    """A canonical chunk body, decoded: its size field and its bytes (one copy, or views)."""

    size: int
    data: bytes | Pieces


def can_read_fast(stream: Stream[Any, Any]) -> bool:
    """Whether ``stream`` can be read by recv_fast (warns once when it cannot)."""
    if not switches.reader:
        return False
    problem = stream_problem(stream)
    if problem:
        fall_back("Reading downloads off grpclib's buffer", problem)
        return False
    return True


async def recv_fast(
    stream: Stream[Any, Any], *, limit: int, address: str, what: str, views: bool
) -> Fields | bytes | None:
    """The next message of ``stream``: its decoded Fields, or its whole body when it is not
    canonical; None at the end of the stream. The length is checked against ``limit`` before
    the body is read; ``views``: the bytes as views of the frames. A stream that ends inside a
    message raises Truncated."""
    if not stream._recv_initial_metadata_done:
        await stream.recv_initial_metadata()
    raw = stream._stream
    with stream._wrapper:  # turns a lost connection or deadline into grpclib's errors
        header = await raw.recv_data(5)
        if not header:
            return None
        if header[0]:
            raise compressed_message(what, address)
        length = int.from_bytes(header[1:5], "big")
        if length > limit:
            raise message_too_large(what, length, limit, address)
        body = await _decode(raw, length, views=views)
    stream._messages_received += 1
    raw.connection.messages_received += 1
    raw.connection.last_message_received = time.monotonic()
    return body


async def _take_views(buffer: protocol.Buffer, count: int) -> Pieces:
    """The next ``count`` bytes of grpclib's stream buffer, as views of the frames that
    carried them: what ``Buffer.read`` does, minus its final join (a copy of them all)."""
    while buffer._acked_size < count and not (buffer._eof and buffer._unacked.empty()):
        data, data_size, ack_size = await buffer._unacked.get()
        if not ack_size:  # END_STREAM
            break
        buffer._acked.append(protocol.AckedData(memoryview(data), data_size))
        buffer._acked_size += data_size
        buffer._ack_callback(ack_size)
    if buffer._acked_size < count:
        raise Truncated("the stream ended inside a message")
    views: Pieces = []
    while count:
        view, size = buffer._acked[0]
        if size <= count:
            buffer._acked.popleft()
            views.append(view)
            taken = size
        else:
            buffer._acked[0] = protocol.AckedData(view[count:], size - count)
            views.append(view[:count])
            taken = count
        buffer._acked_size -= taken
        count -= taken
    return views


class _BodyReader:
    """Reads one message body off a grpclib stream, keeping what it read in order."""

    def __init__(self, raw: RawStream, length: int) -> None:
        self.raw = raw
        self.remaining = length
        self.pieces: Pieces = []

    async def read(self, count: int) -> bytes:
        data = await self.raw.recv_data(count)
        if len(data) != count:  # grpclib returns b"" at END_STREAM on a piece boundary
            raise Truncated("the stream ended inside a message")
        self.pieces.append(data)
        self.remaining -= count
        return data

    async def read_views(self, count: int) -> Pieces:
        views = await _take_views(self.raw.buffer, count)
        self.pieces += views
        self.remaining -= count
        return views

    async def varint(self) -> int | None:
        """A varint ending within the body and within 10 bytes, else None."""
        value = 0
        for shift in range(0, 70, 7):
            if not self.remaining:
                return None
            byte = (await self.read(1))[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        return None

    async def whole_body(self) -> bytes:
        """Everything read so far and the rest of the body, as one bytes object."""
        if self.remaining:
            await self.read(self.remaining)
        return b"".join(self.pieces)


async def _decode(raw: RawStream, length: int, *, views: bool) -> Fields | bytes:
    """Decode one ``length``-byte chunk body from the stream as it is read: Fields for a
    canonical encoding; anything else (unknown or repeated fields, other wire types,
    overlong tags, truncation) is returned whole, as read, so that every body decodes
    exactly as betterproto's parse decodes it."""
    reader = _BodyReader(raw, length)
    size: int | None = None
    data: bytes | Pieces | None = None
    while reader.remaining:
        tag = (await reader.read(1))[0]
        if tag == _SIZE_TAG and size is None:
            size = await reader.varint()
            if size is None:
                break
        elif tag == _DATA_TAG and data is None:
            count = await reader.varint()
            if count is None or count > reader.remaining:
                break
            data = await (reader.read_views(count) if views else reader.read(count))
        else:
            break
    else:
        return Fields(size=size or 0, data=data if data is not None else ([] if views else b""))
    return await reader.whole_body()

"""Reading ExperimentData messages off a grpclib response stream, with a size cap.

grpclib reads a whole message into memory before anyone sees its length, so a director
announcing a 4 GiB message would be buffered whole. On the grpclib versions verified below
the length prefix is read first and an oversized message is refused before its body is
read, and the body is decoded straight off grpclib's stream buffer: the archive bytes are
copied once, from HTTP/2 frames into ``npbytes`` (no whole-body buffer, no second copy by
betterproto's parser). A download needs no contiguous ``npbytes`` at all: recv_raw_chunk
hands over views of the frames that carried them, copied by nobody on the way to the file.
On other versions the plain public path is used (same bytes, same errors, but the cap is
checked only after the message arrived) and a warning says so once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar, overload

import grpclib
from grpclib import protocol
from grpclib.client import Stream
from grpclib.const import Status
from grpclib.exceptions import ProtocolError

from shardclient.errors import DirectorProtocolError, DirectorRPCError
from shardclient.messages import ExperimentData, GetExperimentDataRequest

__all__ = [
    "DataStream", "RawChunk", "recv_chunk", "recv_raw_chunk", "FAST_PATH_VERIFIED",
    "use_fast_path",
]

logger = logging.getLogger("shardclient.stream")

DataStream = Stream[GetExperimentDataRequest, ExperimentData]
RawStream = protocol.Stream

VERIFIED_GRPCLIB: Final = frozenset({"0.4.9"})
"""grpclib versions whose client Stream internals recv_chunk's fast path was tested on."""

FAST_PATH_VERIFIED: Final = grpclib.__version__ in VERIFIED_GRPCLIB

use_fast_path = FAST_PATH_VERIFIED
"""Whether recv_chunk reads the length prefix itself; set False to force the public path."""

_warned = False

M = TypeVar("M")


@dataclass
class RawChunk:
    """An ExperimentData message whose ``npbytes`` stay in the pieces that carried them."""

    size: int
    """The message's size field."""
    pieces: list[bytes | memoryview]
    """``npbytes``, in order; ``b"".join(pieces)`` is the field's value."""

    @property
    def length(self) -> int:
        """How many bytes of ``npbytes`` the pieces hold."""
        return sum(len(piece) for piece in self.pieces)

    @classmethod
    def of(cls, message: ExperimentData) -> RawChunk:
        """The chunk ``message`` holds (ProtocolError if betterproto left npbytes no bytes)."""
        npbytes: object = message.npbytes
        if not isinstance(npbytes, bytes):
            raise ProtocolError(
                f"malformed ExperimentData message: npbytes is {type(npbytes).__name__}"
            )
        return cls(size=message.size, pieces=[npbytes])


def _too_large(length: int, limit: int, address: str) -> DirectorRPCError:
    return DirectorRPCError(
        f"GetExperimentData: {address} sent a {length}-byte message, more than "
        f"max_message_size={limit}",
        status=Status.RESOURCE_EXHAUSTED,
        details=f"message of {length} bytes exceeds the limit of {limit}",
    )


def _compressed(address: str) -> DirectorProtocolError:
    return DirectorProtocolError(
        f"GetExperimentData: {address} sent a compressed message, which was not negotiated",
        address=address,
    )


async def recv_chunk(
    stream: DataStream, *, max_message_size: int, address: str
) -> ExperimentData | None:
    """The next chunk, or None at the end of the stream (trailers not yet checked)."""
    if not use_fast_path:
        return await _recv_public(stream, max_message_size=max_message_size, address=address)
    return await _recv_fast(stream, max_message_size, address, _read_experiment_data)


async def recv_raw_chunk(
    stream: DataStream, *, max_message_size: int, address: str
) -> RawChunk | None:
    """Like recv_chunk, with ``npbytes`` left in pieces (for writing, not for keeping)."""
    if not use_fast_path:
        message = await _recv_public(
            stream, max_message_size=max_message_size, address=address
        )
        return None if message is None else RawChunk.of(message)
    return await _recv_fast(stream, max_message_size, address, _read_raw_chunk)


async def _recv_fast(
    stream: DataStream,
    max_message_size: int,
    address: str,
    read_body: Callable[[RawStream, int], Awaitable[M]],
) -> M | None:
    if not stream._recv_initial_metadata_done:
        await stream.recv_initial_metadata()
    raw = stream._stream
    with stream._wrapper:  # turns a lost connection or deadline into grpclib's errors
        try:
            header = await raw.recv_data(5)
            if not header:
                return None
            if header[0]:
                raise _compressed(address)
            length = int.from_bytes(header[1:5], "big")
            if length > max_message_size:
                raise _too_large(length, max_message_size, address)
            message = await read_body(raw, length)
        except AssertionError:  # grpclib's Buffer: END_STREAM inside a message
            raise DirectorProtocolError(
                f"GetExperimentData: {address} ended the stream in the middle of a message",
                address=address,
            ) from None
    stream._messages_received += 1
    raw.connection.messages_received += 1
    raw.connection.last_message_received = time.monotonic()
    return message


async def _take_views(buffer: protocol.Buffer, count: int) -> list[bytes | memoryview]:
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
        raise AssertionError("the stream ended inside a message")
    views: list[bytes | memoryview] = []
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


_SIZE_TAG: Final = 0x08  # field 1 (size), varint
_NPBYTES_TAG: Final = 0x12  # field 2 (npbytes), length-delimited


class _BodyReader:
    """Reads one message body off a grpclib stream, keeping what it read in order."""

    def __init__(self, raw: RawStream, length: int) -> None:
        self.raw = raw
        self.remaining = length
        self.pieces: list[bytes | memoryview] = []

    async def read(self, count: int) -> bytes:
        data = await self.raw.recv_data(count)
        if len(data) != count:  # grpclib returns b"" at END_STREAM on a piece boundary
            raise AssertionError("the stream ended inside a message")
        self.pieces.append(data)
        self.remaining -= count
        return data

    async def read_views(self, count: int) -> list[bytes | memoryview]:
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


async def _read_experiment_data(raw: RawStream, length: int) -> ExperimentData:
    return await _decode(raw, length, raw_npbytes=False)


async def _read_raw_chunk(raw: RawStream, length: int) -> RawChunk:
    return await _decode(raw, length, raw_npbytes=True)


@overload
async def _decode(raw: RawStream, length: int, *, raw_npbytes: Literal[False]) -> ExperimentData:
    ...


@overload
async def _decode(raw: RawStream, length: int, *, raw_npbytes: Literal[True]) -> RawChunk:
    ...


async def _decode(raw: RawStream, length: int, *, raw_npbytes: bool) -> ExperimentData | RawChunk:
    """Decode one ``length``-byte ExperimentData body from the stream as it is read.

    The canonical encodings (each field at most once, in either order, nothing else) are
    decoded here, reading ``npbytes`` with a single copy (or none, as a RawChunk's
    pieces). Anything else (unknown or repeated fields, other wire types, overlong tags,
    truncation) hands the whole body, as read, to betterproto, so every body decodes
    exactly as ``ExperimentData().parse`` decodes it.
    """
    reader = _BodyReader(raw, length)
    size: int | None = None
    npbytes: bytes | list[bytes | memoryview] | None = None
    while reader.remaining:
        tag = (await reader.read(1))[0]
        if tag == _SIZE_TAG and size is None:
            size = await reader.varint()
            if size is None:
                break
        elif tag == _NPBYTES_TAG and npbytes is None:
            count = await reader.varint()
            if count is None or count > reader.remaining:
                break
            npbytes = await (reader.read_views(count) if raw_npbytes else reader.read(count))
        else:
            break
    else:
        if raw_npbytes:
            pieces = npbytes if isinstance(npbytes, list) else []
            return RawChunk(size=size or 0, pieces=pieces)
        message = ExperimentData()
        message._serialized_on_wire = True  # as parse() leaves it, even for an empty body
        if size is not None:
            message.size = size
        if isinstance(npbytes, bytes):
            message.npbytes = npbytes
        return message
    body = await reader.whole_body()
    try:
        parsed = ExperimentData().parse(body)
    except Exception as exc:  # betterproto raises ValueError, EOFError, ... on bad input
        raise ProtocolError(f"malformed ExperimentData message: {exc}") from exc
    return RawChunk.of(parsed) if raw_npbytes else parsed


async def _recv_public(
    stream: DataStream, *, max_message_size: int, address: str
) -> ExperimentData | None:
    global _warned
    if not FAST_PATH_VERIFIED and not _warned:
        _warned = True
        logger.warning(
            "grpclib %s is not one shardclient verified (%s): max_message_size is checked "
            "only after a message has been received",
            grpclib.__version__,
            ", ".join(sorted(VERIFIED_GRPCLIB)),
        )
    try:
        message = await stream.recv_message()
    except NotImplementedError:  # grpclib's answer to the compressed flag
        raise _compressed(address) from None
    except AssertionError:
        raise DirectorProtocolError(
            f"GetExperimentData: {address} ended the stream in the middle of a message",
            address=address,
        ) from None
    if message is not None and len(message.npbytes) > max_message_size:
        raise _too_large(len(message.npbytes), max_message_size, address)
    return message

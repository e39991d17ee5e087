"""Reading archive chunks off a GetExperimentData response stream, each size-capped.

Both director generations send an archive as messages whose field 1 is the chunk's size and
field 2 its bytes (``npbytes`` in 1.5-1.7, ``exp_data`` in 1.9). The fast reader
(:mod:`.http2.reader`) is used where it can run; otherwise grpclib's own ``recv_message``
reads the same bytes with the same errors, the cap checked only after the message arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import betterproto
from grpclib.client import Stream
from grpclib.exceptions import ProtocolError

from shardclient._client.download import RawChunk
from shardclient._client.http2.reader import Fields, can_read_fast, recv_fast
from shardclient._client.translate import (
    compressed_message,
    message_too_large,
    truncated_message,
)
from shardclient._client.wire import check_message

__all__ = ["ChunkType", "as_message", "as_raw", "recv_message", "recv_raw"]

M = TypeVar("M", bound=betterproto.Message)


@dataclass(frozen=True)
class ChunkType(Generic[M]):
    """A generation's chunk message: its class, and the name of its bytes field (field 2)."""

    message: type[M]
    data_field: str

    def data(self, message: M) -> object:
        return getattr(message, self.data_field)


@dataclass(frozen=True)
class _Reading:
    """What every read of one stream needs to know."""

    limit: int
    address: str
    what: str


async def recv_message(
    stream: Stream[Any, M], chunk_type: ChunkType[M], *, limit: int, address: str, what: str
) -> M | None:
    """The next chunk as a message, or None at the end of the stream (trailers unchecked)."""
    read = await _next(stream, chunk_type, _Reading(limit, address, what), views=False)
    return None if read is None else as_message(read, chunk_type)


async def recv_raw(
    stream: Stream[Any, M], chunk_type: ChunkType[M], *, limit: int, address: str, what: str
) -> RawChunk | None:
    """Like recv_message, with the bytes left in pieces (for writing, not for keeping)."""
    read = await _next(stream, chunk_type, _Reading(limit, address, what), views=True)
    return None if read is None else as_raw(read, chunk_type)


def as_message(read: Fields | bytes | M, chunk_type: ChunkType[M]) -> M:
    """A chunk read off the stream (decoded fields, a body to parse, or a parsed message) as
    a message, exactly as betterproto would have parsed its body."""
    if isinstance(read, Fields):
        make: Any = chunk_type.message  # a generated message class: its fields are keywords
        return make(size=read.size, **{chunk_type.data_field: read.data})  # type: ignore[no-any-return]
    return _parse(read, chunk_type.message) if isinstance(read, bytes) else read


def as_raw(read: Fields | bytes | M, chunk_type: ChunkType[M]) -> RawChunk:
    """A chunk read off the stream as a RawChunk, its bytes in the pieces that carried them."""
    if isinstance(read, Fields):
        pieces: list[bytes | memoryview] = read.data if isinstance(read.data, list) else [read.data]
        return RawChunk(size=read.size, pieces=pieces)
    message = _parse(read, chunk_type.message) if isinstance(read, bytes) else read
    data = chunk_type.data(message)
    if not isinstance(data, bytes):  # betterproto left a mistyped field as it came
        raise ProtocolError(
            f"malformed {type(message).__name__} message: {chunk_type.data_field} is "
            f"{type(data).__name__}"
        )
    size: object = getattr(message, "size", 0)
    return RawChunk(size=size if isinstance(size, int) else 0, pieces=[data])


async def _next(
    stream: Stream[Any, M], chunk_type: ChunkType[M], reading: _Reading, *, views: bool
) -> Fields | bytes | M | None:
    what, address = reading.what, reading.address
    try:
        if can_read_fast(stream):
            return await recv_fast(
                stream, limit=reading.limit, address=address, what=what, views=views
            )
        message = await stream.recv_message()
    except NotImplementedError:  # grpclib's answer to the compressed flag
        raise compressed_message(what, address) from None
    except AssertionError:  # grpclib's Buffer (and the fast reader): END_STREAM in a message
        raise truncated_message(what, address) from None
    if message is not None:
        length = len(chunk_type.data(message))  # type: ignore[arg-type]  # bytes, codec-checked
        if length > reading.limit:
            raise message_too_large(what, length, reading.limit, address)
    return message


def _parse(body: bytes, message_type: type[M]) -> M:
    """A body the fast reader did not decode, parsed exactly as grpclib's codec would."""
    try:
        check_message(body, message_type)  # no truncated or mistyped field slips through
        return message_type().parse(body)
    except Exception as exc:  # betterproto raises ValueError, EOFError, ... on bad input
        raise ProtocolError(f"malformed {message_type.__name__} message: {exc}") from exc

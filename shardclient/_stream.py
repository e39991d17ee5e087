"""Reading ExperimentData messages off a GetExperimentData response stream, size-capped.

The fast reader in shardclient._compat is used where it can run (it refuses an oversized
message before buffering it, and copies the bytes once or not at all); otherwise grpclib's
own ``recv_message`` (same bytes, same errors, but the cap is checked only after the
message arrived).
"""

from __future__ import annotations

from shardclient import _compat
from shardclient._compat import DataStream
from shardclient._download import RawChunk
from shardclient._errors import DirectorProtocolError, compressed_message, message_too_large
from shardclient.messages import ExperimentData

__all__ = ["DataStream", "recv_chunk", "recv_raw_chunk"]


async def recv_chunk(
    stream: DataStream, *, max_message_size: int, address: str
) -> ExperimentData | None:
    """The next chunk, or None at the end of the stream (trailers not yet checked)."""
    if _compat.can_read_fast(stream):
        message = await _compat.recv_fast(
            stream, max_message_size=max_message_size, address=address, raw_npbytes=False
        )
        assert not isinstance(message, RawChunk)
        return message
    return await _recv_public(stream, max_message_size=max_message_size, address=address)


async def recv_raw_chunk(
    stream: DataStream, *, max_message_size: int, address: str
) -> RawChunk | None:
    """Like recv_chunk, with ``npbytes`` left in pieces (for writing, not for keeping)."""
    if _compat.can_read_fast(stream):
        chunk = await _compat.recv_fast(
            stream, max_message_size=max_message_size, address=address, raw_npbytes=True
        )
        assert not isinstance(chunk, ExperimentData)
        return chunk
    message = await _recv_public(stream, max_message_size=max_message_size, address=address)
    return None if message is None else RawChunk.of(message)


async def _recv_public(
    stream: DataStream, *, max_message_size: int, address: str
) -> ExperimentData | None:
    try:
        message = await stream.recv_message()
    except NotImplementedError:  # grpclib's answer to the compressed flag
        raise compressed_message(address) from None
    except AssertionError:
        raise DirectorProtocolError(
            f"GetExperimentData: {address} ended the stream in the middle of a message",
            address=address,
        ) from None
    if message is not None and len(message.npbytes) > max_message_size:
        raise message_too_large(len(message.npbytes), max_message_size, address)
    return message

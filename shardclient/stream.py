"""Reading ExperimentData messages off a grpclib response stream, with a size cap.

grpclib reads a whole message into memory before anyone sees its length, so a director
announcing a 4 GiB message would be buffered whole. On the grpclib versions verified below
the length prefix is read first and an oversized message is refused before its body is
read. On other versions the plain public path is used (same bytes, same errors, but the
cap is checked only after the message arrived) and a warning says so once.
"""

from __future__ import annotations

import logging
import time
from importlib.metadata import version
from typing import Final

from grpclib.client import Stream
from grpclib.const import Status

from shardclient.errors import DirectorProtocolError, DirectorRPCError
from shardclient.messages import ExperimentData, GetExperimentDataRequest

__all__ = ["DataStream", "recv_chunk", "FAST_PATH_VERIFIED", "use_fast_path"]

logger = logging.getLogger("shardclient.stream")

DataStream = Stream[GetExperimentDataRequest, ExperimentData]

VERIFIED_GRPCLIB: Final = frozenset({"0.4.9"})
"""grpclib versions whose client Stream internals recv_chunk's fast path was tested on."""

FAST_PATH_VERIFIED: Final = version("grpclib") in VERIFIED_GRPCLIB

use_fast_path = FAST_PATH_VERIFIED
"""Whether recv_chunk reads the length prefix itself; set False to force the public path."""

_warned = False


def _too_large(length: int, limit: int, address: str) -> DirectorRPCError:
    return DirectorRPCError(
        f"GetExperimentData: {address} sent a {length}-byte message, more than "
        f"max_message_size={limit}",
        status=Status.RESOURCE_EXHAUSTED,
        details=f"message of {length} bytes exceeds the limit of {limit}",
    )


async def recv_chunk(
    stream: DataStream, *, max_message_size: int, address: str
) -> ExperimentData | None:
    """The next chunk, or None at the end of the stream (trailers not yet checked)."""
    if not use_fast_path:
        return await _recv_public(stream, max_message_size=max_message_size, address=address)
    if not stream._recv_initial_metadata_done:
        await stream.recv_initial_metadata()
    raw = stream._stream
    with stream._wrapper:  # turns a lost connection or deadline into grpclib's errors
        try:
            header = await raw.recv_data(5)
            if not header:
                return None
            if header[0]:
                raise DirectorProtocolError(
                    f"GetExperimentData: {address} sent a compressed message, which was "
                    "not negotiated",
                    address=address,
                )
            length = int.from_bytes(header[1:5], "big")
            if length > max_message_size:
                raise _too_large(length, max_message_size, address)
            body = await raw.recv_data(length)
        except AssertionError:  # grpclib's Buffer: END_STREAM inside a message
            raise DirectorProtocolError(
                f"GetExperimentData: {address} ended the stream in the middle of a message",
                address=address,
            ) from None
    stream._messages_received += 1
    raw.connection.messages_received += 1
    raw.connection.last_message_received = time.monotonic()
    return ExperimentData().parse(body)


async def _recv_public(
    stream: DataStream, *, max_message_size: int, address: str
) -> ExperimentData | None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "grpclib %s is not one shardclient verified (%s): max_message_size is checked "
            "only after a message has been received",
            version("grpclib"),
            ", ".join(sorted(VERIFIED_GRPCLIB)),
        )
    try:
        message = await stream.recv_message()
    except AssertionError:
        raise DirectorProtocolError(
            f"GetExperimentData: {address} ended the stream in the middle of a message",
            address=address,
        ) from None
    if message is not None and len(message.npbytes) > max_message_size:
        raise _too_large(len(message.npbytes), max_message_size, address)
    return message

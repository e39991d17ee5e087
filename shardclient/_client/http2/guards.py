"""Whether each fast path may run: the switches, the checks of the structure each relies on in
the installed grpclib/h2/hyperframe, and the one warning when a path falls back."""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any, Literal

from grpclib import protocol
from grpclib.client import Channel, Stream
from grpclib.protocol import H2Protocol
from h2.connection import H2Connection
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import DataFrame

from shardclient._log import OnceLog

__all__ = ["Switches", "channel_tuning_problem", "fall_back", "stream_problem", "switches"]

logger = logging.getLogger("shardclient.client")


@dataclass
class Switches:
    """The fast paths' switches (benches and tests turn them off to measure or to compare)."""

    tuning: bool = True
    """Whether new connections get the tuned frame buffer and the larger frames."""
    reader: bool = True
    """Whether downloads are read off grpclib's buffer (False: grpclib's recv_message)."""
    max_frame_size: int | None = 1024 * 1024
    """SETTINGS_MAX_FRAME_SIZE offered to the director (None: HTTP/2's default, 16 KiB)."""


switches = Switches()

_fallbacks = OnceLog(logger, "download fast path")


def fall_back(path: str, problem: str) -> None:
    """Say once per process that ``path`` is off, and why."""
    _fallbacks.problem(
        path,
        f"{path} is off ({problem}): downloads use plain grpclib and are slower",
        until="per process",
    )


def _missing(obj: object, *names: str) -> str | None:
    for name in names:
        if not hasattr(obj, name):
            return f"{type(obj).__name__ if not isinstance(obj, type) else obj.__name__}.{name}"
    return None


def _check_tuning() -> str | None:
    """What the channel tuning needs and the installed libraries lack (None: nothing)."""
    problem = _missing(Channel, "_protocol_factory") or _missing(H2Protocol, "connection_made")
    if problem:
        return f"no {problem}"
    connection = H2Connection()
    buffer = getattr(connection, "incoming_buffer", None)
    if not isinstance(buffer, FrameBuffer):
        return "H2Connection.incoming_buffer is not an h2 FrameBuffer"
    problem = _missing(buffer, "_data", "max_frame_size", "_headers_buffer")
    if problem or not isinstance(getattr(buffer, "_data", None), bytearray):
        return f"no {problem or 'FrameBuffer._data bytearray'}"
    problem = _missing(DataFrame(1), "_body_repr", "parse_flags", "body_len")
    return f"no {problem}" if problem else None


_tuning_problem: str | Literal[False] | None = False  # False: not checked yet


def channel_tuning_problem() -> str | None:
    """Why the channel tuning cannot run here (None when it can); checked once."""
    global _tuning_problem
    if _tuning_problem is False:
        _tuning_problem = _check_tuning()
    return _tuning_problem


def check_stream(stream: Stream[Any, Any]) -> str | None:
    """What the fast reader needs from a grpclib stream and ``stream`` lacks (None: nothing)."""
    problem = _missing(
        stream, "_stream", "_wrapper", "_recv_initial_metadata_done", "_messages_received"
    )
    if problem:
        return f"no {problem}"
    raw = stream._stream
    problem = _missing(raw, "recv_data", "buffer", "connection")
    if problem:
        return f"no {problem}"
    buffer = raw.buffer
    problem = _missing(buffer, "_acked", "_acked_size", "_unacked", "_eof", "_ack_callback")
    problem = problem or _missing(raw.connection, "messages_received", "last_message_received")
    if problem:
        return f"no {problem}"
    acked: object = getattr(buffer, "_acked", None)
    unacked: object = getattr(buffer, "_unacked", None)
    if not isinstance(acked, collections.deque) or not isinstance(unacked, asyncio.Queue):
        return "grpclib's Buffer keeps its data differently"
    return None if hasattr(protocol, "AckedData") else "no grpclib.protocol.AckedData"


_stream_problem: str | Literal[False] | None = False


def stream_problem(stream: Stream[Any, Any] | None = None) -> str | Literal[False] | None:
    """Why the fast stream reader cannot run here (None: it can; False: not known until a
    stream was seen). Checked once, on the first stream."""
    global _stream_problem
    if _stream_problem is False and stream is not None:
        _stream_problem = check_stream(stream)
    return _stream_problem

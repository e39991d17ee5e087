"""The only place shardclient touches grpclib's, h2's and hyperframe's private attributes.

Two fast paths for downloads, each measured in bench/ (bench/throughput.py switches them):

- **The stream reader.** grpclib reads a whole message into memory before anyone sees its
  length, then joins it, then betterproto copies ``npbytes`` out of it. Here the 5-byte
  length prefix is read first (an oversized message is refused before its body is
  buffered), and the ExperimentData body is decoded straight off grpclib's stream buffer:
  the archive bytes are copied once (``recv_fast``) or not at all (a RawChunk's pieces are
  views of the frames that carried them).
- **The channel tuning.** h2 formats ``repr(frame)`` for a trace log on every frame it
  receives, and hyperframe's DataFrame repr hexlifies the whole payload: a third of a
  download's CPU. Our connections get a frame buffer whose DATA frames have a constant-cost
  repr and are copied once rather than twice, and offer a 1 MiB SETTINGS_MAX_FRAME_SIZE.
  Nothing global is patched: other grpclib/h2 users in the process are untouched.

Each path checks the *structure* it relies on (the attributes exist and have the expected
kind) where it first meets the objects; on any mismatch it falls back to plain grpclib and
logs one warning saying what was missing. The diagnosis helpers at the end read internals
too, defensively: on another layout they find nothing. The tuned protocol also notes what
grpclib forgets and a diagnosis needs: whether the director sent any byte, the error the
connection was lost with, and whether grpclib closed it for an unanswered keepalive ping.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl as _ssl
import time
from asyncio import BaseTransport
from typing import Final, Literal, overload

import h2.exceptions
from grpclib import protocol
from grpclib.client import Channel, Handler, Stream
from grpclib.config import Configuration
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import ProtocolError
from grpclib.protocol import H2Protocol
from h2.connection import H2Connection
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, Frame, GoAwayFrame

from shardclient._download import RawChunk
from shardclient._errors import DirectorProtocolError, compressed_message, message_too_large
from shardclient._wire import check_message
from shardclient.messages import ExperimentData, GetExperimentDataRequest

__all__ = [
    "DataStream", "channel_tuning_problem", "connection_broken", "framing_error",
    "goaway_received",
    "director_spoke", "early_tls_close", "open_channel", "went_silent", "recv_fast", "stream_problem", "unparseable_reply",
]  # fmt: skip

logger = logging.getLogger("shardclient")

RawStream = protocol.Stream
DataStream = Stream[GetExperimentDataRequest, ExperimentData]

use_tuning = True
"""Whether open_channel tunes its connections (set False to measure, or to rule it out)."""

use_fast_path = True
"""Whether downloads read messages off grpclib's buffer (set False for grpclib's own path)."""

max_frame_size: int | None = 1024 * 1024
"""SETTINGS_MAX_FRAME_SIZE offered to the director (HTTP/2's default is 16 KiB)."""

_warned: set[str] = set()


def _fall_back(path: str, problem: str) -> None:
    if path not in _warned:
        _warned.add(path)
        logger.warning("%s is off (%s): downloads use plain grpclib and are slower", path, problem)


# --- guards ----------------------------------------------------------------------------


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


def _check_stream(stream: DataStream) -> str | None:
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


def stream_problem(stream: DataStream | None = None) -> str | Literal[False] | None:
    """Why the fast stream reader cannot run here (None: it can; False: not known until a
    stream was seen). Checked once, on the first stream."""
    global _stream_problem
    if _stream_problem is False and stream is not None:
        _stream_problem = _check_stream(stream)
    return _stream_problem


# --- the channel -------------------------------------------------------------------------


def _elided_body() -> str:
    return "data=<not shown>"


_DATA_TYPE: Final = 0x0
_PADDED: Final = 0x8


class QuietFrameBuffer(FrameBuffer):
    """h2's FrameBuffer, but DATA frames it yields cost one copy and a constant-cost repr.

    h2 copies each frame body out of its buffer, and hyperframe copies it again into
    ``frame.data``. A complete, unpadded DATA frame outside a header block is parsed here
    instead, its body copied once, straight from the buffer; every other case (padding,
    errors, incomplete or oversized frames, other types) is left to h2 unchanged.
    """

    goaway_seen = False
    """Whether the peer sent GOAWAY (h2 closes its state alike on a local protocol error)."""
    broken: str | None = None
    """Why the peer's bytes were not HTTP/2 frames, once h2 said so."""

    def __next__(self) -> Frame:
        try:
            frame = self._next_data_frame() or super().__next__()
        except h2.exceptions.ProtocolError as exc:
            self.broken = str(exc)
            raise
        if type(frame) is GoAwayFrame:
            self.goaway_seen = True
        if type(frame) is DataFrame:
            # repr() reads _body_repr through the instance: no payload hexlified, same type
            # (h2 dispatches on frame.__class__), same fields.
            frame._body_repr = _elided_body  # type: ignore[method-assign]
        return frame

    def _next_data_frame(self) -> DataFrame | None:
        buffer = self._data
        if len(buffer) < 9 or buffer[3] != _DATA_TYPE or buffer[4] & _PADDED:
            return None
        length = int.from_bytes(buffer[0:3], "big")
        stream_id = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
        if (
            self._headers_buffer  # a DATA frame inside a header block: h2 raises
            or not stream_id  # invalid: h2 raises
            or length > self.max_frame_size  # h2 raises FrameTooLargeError
            or len(buffer) < 9 + length  # incomplete: h2 waits for more
        ):
            return None
        frame = DataFrame(stream_id)
        frame.parse_flags(buffer[4])
        # no view may outlive this block, even on error: the bytearray shrinks below
        with memoryview(buffer) as view, view[9 : 9 + length] as body:
            frame.data = body.tobytes()
        frame.body_len = length
        del buffer[: 9 + length]
        return frame


def tune_connection(connection: H2Connection) -> None:
    """Tune one fresh h2 connection: quiet DATA reprs, larger inbound frames.

    Call before any byte was received on it (the frame buffer is replaced, not drained).
    """
    quiet = QuietFrameBuffer(server=False)
    quiet.max_frame_size = connection.incoming_buffer.max_frame_size
    connection.incoming_buffer = quiet
    if max_frame_size is not None:
        connection.update_settings({SettingCodes.MAX_FRAME_SIZE: max_frame_size})


class _TunedProtocol(H2Protocol):
    """grpclib's protocol, its h2 connection tuned as soon as it exists. It also notes what
    grpclib forgets and a TLS refusal shows: whether the peer sent any byte, and the error
    the connection was lost with."""

    tls = False
    heard = False
    lost = False
    lost_with: BaseException | None = None

    def connection_made(self, transport: BaseTransport) -> None:
        self.tls = transport.get_extra_info("ssl_object") is not None
        super().connection_made(transport)
        tune_connection(self.connection._connection)
        self.connection.flush()

    def data_received(self, data: bytes) -> None:
        self.heard = True
        super().data_received(data)

    unanswered_ping = False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost, self.lost_with = True, exc
        self.unanswered_ping = _ping_timed_out(getattr(self, "connection", None))
        super().connection_lost(exc)


def _ping_timed_out(connection: object) -> bool:
    """Whether grpclib closed ``connection`` because a keepalive ping went unanswered: the
    close timer it sets while a ping is outstanding has come due."""
    timer = getattr(connection, "_close_by_ping_handler", None)
    if not isinstance(timer, asyncio.TimerHandle):
        return False
    try:  # asyncio runs a timer up to one clock tick early
        return asyncio.get_running_loop().time() + _CLOCK_RESOLUTION >= timer.when()
    except RuntimeError:  # no running loop: nothing can be told
        return False


_CLOCK_RESOLUTION: Final = time.get_clock_info("monotonic").resolution


class TunedChannel(Channel):
    """A grpclib Channel whose connections get tune_connection()."""

    def _protocol_factory(self) -> H2Protocol:
        config, h2_config = getattr(self, "_config", None), getattr(self, "_h2_config", None)
        if config is None or h2_config is None:
            _fall_back("HTTP/2 download tuning", "no Channel._config or ._h2_config")
            return super()._protocol_factory()
        return _TunedProtocol(Handler(), config, h2_config)


def open_channel(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None,
    config: Configuration,
    codec: CodecBase | None = None,
) -> Channel:
    """A grpclib Channel to ``host:port``: tuned when the tuning can run, else the plain one."""
    if use_tuning:
        problem = channel_tuning_problem()
        if problem is None:
            return TunedChannel(host, port, ssl=ssl, config=config, codec=codec)
        _fall_back("HTTP/2 download tuning", problem)
    return Channel(host, port, ssl=ssl, config=config, codec=codec)


# --- the stream reader -------------------------------------------------------------------


def can_read_fast(stream: DataStream) -> bool:
    """Whether ``stream`` can be read by recv_fast (warns once when it cannot)."""
    if not use_fast_path:
        return False
    problem = stream_problem(stream)
    if problem:
        _fall_back("Reading downloads off grpclib's buffer", problem)
        return False
    return True


async def recv_fast(
    stream: DataStream, *, max_message_size: int, address: str, raw_npbytes: bool
) -> ExperimentData | RawChunk | None:
    """The next message of ``stream`` (None at its end), its length checked before its body
    is read; ``raw_npbytes``: a RawChunk whose pieces are views of the frames."""
    if not stream._recv_initial_metadata_done:
        await stream.recv_initial_metadata()
    raw = stream._stream
    with stream._wrapper:  # turns a lost connection or deadline into grpclib's errors
        try:
            header = await raw.recv_data(5)
            if not header:
                return None
            if header[0]:
                raise compressed_message(address)
            length = int.from_bytes(header[1:5], "big")
            if length > max_message_size:
                raise message_too_large(length, max_message_size, address)
            message = await _decode(raw, length, raw_npbytes=raw_npbytes)
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


@overload
async def _decode(
    raw: RawStream, length: int, *, raw_npbytes: Literal[False]
) -> ExperimentData: ...


@overload
async def _decode(raw: RawStream, length: int, *, raw_npbytes: Literal[True]) -> RawChunk: ...


@overload
async def _decode(
    raw: RawStream, length: int, *, raw_npbytes: bool
) -> ExperimentData | RawChunk: ...


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
        return ExperimentData(
            size=size or 0, npbytes=npbytes if isinstance(npbytes, bytes) else b""
        )
    body = await reader.whole_body()
    try:
        check_message(body, ExperimentData)  # no truncated or mistyped field slips through
        parsed = ExperimentData().parse(body)
    except Exception as exc:  # betterproto raises ValueError, EOFError, ... on bad input
        raise ProtocolError(f"malformed ExperimentData message: {exc}") from exc
    return RawChunk.of(parsed) if raw_npbytes else parsed


# --- diagnosis of calls that timed out --------------------------------------------------


def connection_broken(channel: Channel | None) -> bool:
    """Whether grpclib saw the channel's current connection end."""
    protocol = getattr(channel, "_protocol", None)
    handler = getattr(protocol, "handler", None)
    return getattr(handler, "connection_lost", False) is True


def unparseable_reply(channel: Channel | None) -> str | None:
    """A description of unread bytes that can never form an HTTP/2 frame, if there are any."""
    protocol = getattr(channel, "_protocol", None)
    h2_connection = getattr(getattr(protocol, "connection", None), "_connection", None)
    buffer = getattr(h2_connection, "incoming_buffer", None)
    pending = getattr(buffer, "_data", None)
    if not isinstance(pending, (bytes, bytearray)) or not pending:
        return None
    if pending.startswith(b"HTTP/"):
        return "answered in HTTP/1, not HTTP/2"
    limit = getattr(buffer, "max_frame_size", 0)
    if len(pending) >= 9 and isinstance(limit, int) and limit > 0:
        declared = int.from_bytes(pending[:3], "big")
        if declared > limit:
            return f"sent bytes that are not an HTTP/2 frame (first bytes {bytes(pending[:9])!r})"
    return None


def framing_error(channel: Channel | None) -> str | None:
    """What h2 found wrong with the peer's frames on a tuned connection (None: nothing)."""
    protocol = getattr(channel, "_protocol", None)
    h2_connection = getattr(getattr(protocol, "connection", None), "_connection", None)
    broken = getattr(getattr(h2_connection, "incoming_buffer", None), "broken", None)
    return broken if isinstance(broken, str) else None


def goaway_received(channel: Channel | None) -> bool:
    """Whether the peer sent GOAWAY. A tuned connection's frame buffer saw it or not; on a
    plain one, h2's CLOSED state is the best sign (it also follows a local protocol error)."""
    protocol = getattr(channel, "_protocol", None)
    h2_connection = getattr(getattr(protocol, "connection", None), "_connection", None)
    seen = getattr(getattr(h2_connection, "incoming_buffer", None), "goaway_seen", None)
    if isinstance(seen, bool):
        return seen
    state = getattr(getattr(h2_connection, "state_machine", None), "state", None)
    return getattr(state, "name", None) == "CLOSED"


def _tuned_protocol(channel: Channel | None) -> _TunedProtocol | None:
    """The channel's current connection, when it is a tuned one."""
    protocol = getattr(channel, "_protocol", None)
    return protocol if isinstance(protocol, _TunedProtocol) else None


def early_tls_close(channel: Channel | None) -> str | None:
    """On a tuned TLS connection lost before the director sent a single byte: the TLS alert
    it was ended with, or '' when it was just closed. None otherwise. Under TLS 1.3 a server
    checks the client's certificate after the client's handshake is done, and gRPC C-core
    (and Python's ssl) then refuse it this way; a gRPC server that accepted the client always
    speaks first. A TLS proxy whose backend is down closes the same way."""
    protocol = _tuned_protocol(channel)
    if protocol is None or not protocol.tls or not protocol.lost:
        return None
    if protocol.heard:
        return None
    lost = protocol.lost_with
    if isinstance(lost, _ssl.SSLError):
        return str(lost.reason or lost)
    return ""


def director_spoke(channel: Channel | None) -> bool:
    """Whether the peer sent anything on the channel's last connection (True when that
    cannot be known: a plain grpclib channel). A frozen process whose kernel still accepts
    connections never does."""
    protocol = _tuned_protocol(channel)
    return protocol is None or protocol.heard


def went_silent(channel: Channel | None) -> bool:
    """Whether the channel's connection was closed because the director stopped answering
    keepalive pings (a frozen or vanished peer), not cut by the peer or a proxy."""
    protocol = _tuned_protocol(channel)
    return protocol is not None and protocol.unanswered_ping

"""Tuned connections: grpclib channels whose h2 connections parse DATA frames cheaply.

Each connection's frame buffer is replaced before any byte arrives (nothing global is
patched); its protocol also notes what grpclib forgets and a diagnosis needs: whether the
peer sent any byte, the error the connection was lost with, and whether grpclib closed it
for an unanswered keepalive ping.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
import time
from asyncio import BaseTransport
from typing import Final

import h2.exceptions
from grpclib.client import Channel, Handler
from grpclib.config import Configuration
from grpclib.encoding.base import CodecBase
from grpclib.protocol import H2Protocol
from h2.connection import H2Connection
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, Frame, GoAwayFrame

from shardclient._client.http2.guards import channel_tuning_problem, fall_back, switches
from shardclient._client.http2.preface import Foreign, judge_first_bytes

__all__ = [
    "QuietFrameBuffer",
    "TunedChannel",
    "TunedProtocol",
    "director_configuration",
    "open_channel",
    "tune_connection",
]


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
    if switches.max_frame_size is not None:
        connection.update_settings({SettingCodes.MAX_FRAME_SIZE: switches.max_frame_size})


class TunedProtocol(H2Protocol):
    """grpclib's protocol, its h2 connection tuned as soon as it exists. It also notes what
    grpclib forgets and a TLS refusal shows: whether the peer sent any byte, and the error
    the connection was lost with. And it judges the peer's first bytes: a peer that does not
    speak HTTP/2 (an HTTP/1 server, a TLS server to a plain-text client, anything else) is
    noted as ``foreign`` and its connection closed at once, which ends the calls on it."""

    tls = False
    heard = False
    lost = False
    lost_with: BaseException | None = None
    foreign: Foreign | None = None
    _first = b""
    _judged = False

    def connection_made(self, transport: BaseTransport) -> None:
        self.tls = transport.get_extra_info("ssl_object") is not None
        self._transport = transport
        super().connection_made(transport)
        tune_connection(self.connection._connection)
        self.connection.flush()

    def data_received(self, data: bytes) -> None:
        self.heard = True
        if not self._judged:
            self._first += data[: _JUDGED_BYTES - len(self._first)]
            self.foreign = judge_first_bytes(self._first)
            if self.foreign is not None:
                self._transport.close()  # not a gRPC director: nothing to wait for
                return
            self._judged = len(self._first) >= _JUDGED_BYTES
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
_JUDGED_BYTES: Final = 9  # a frame header: enough to tell HTTP/2 from anything else


class TunedChannel(Channel):
    """A grpclib Channel whose connections get tune_connection()."""

    def _protocol_factory(self) -> H2Protocol:
        config, h2_config = getattr(self, "_config", None), getattr(self, "_h2_config", None)
        if config is None or h2_config is None:
            fall_back("HTTP/2 download tuning", "no Channel._config or ._h2_config")
            return super()._protocol_factory()
        return TunedProtocol(Handler(), config, h2_config)


_CONNECTION_WINDOW: Final = 2**31 - 1
"""HTTP/2 connection window: HTTP/2's largest. Memory stays bounded by each stream's own
4 MiB window (grpclib's default); a smaller connection window only lets a few held streams
stop every other call on the connection."""


def director_configuration(
    *, keepalive_time: float | None, keepalive_timeout: float
) -> Configuration:
    """grpclib's settings for a connection to a director.

    grpclib by default sends at most 2 pings between data frames and none within 5 minutes
    of the last: a long poll would go unwatched. Here a ping goes out every
    ``keepalive_time`` while a call is in flight (gRPC C-core servers may answer such pings
    with GOAWAY too_many_pings; the long poll re-polls then). Those settings are grpclib's
    underscore (experimental) fields, which is why they are set here."""
    return Configuration(
        # a stream nobody reads (a chunk iterator held by its caller) fills only its own
        # 4 MiB window: other calls still get through, however many are held
        http2_connection_window_size=_CONNECTION_WINDOW,
        _keepalive_time=keepalive_time,
        _keepalive_timeout=keepalive_timeout,
        _keepalive_permit_without_calls=False,
        _http2_max_pings_without_data=0,
        _http2_min_sent_ping_interval_without_data=keepalive_time or 300,
    )


def open_channel(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None,
    config: Configuration,
    codec: CodecBase | None = None,
) -> Channel:
    """A grpclib Channel to ``host:port``: tuned when the tuning can run, else the plain one."""
    if switches.tuning:
        problem = channel_tuning_problem()
        if problem is None:
            return TunedChannel(host, port, ssl=ssl, config=config, codec=codec)
        fall_back("HTTP/2 download tuning", problem)
    return Channel(host, port, ssl=ssl, config=config, codec=codec)

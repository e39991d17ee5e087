"""Per-connection HTTP/2 tuning for the channels shardclient opens (nothing global).

h2 (since 4.1) formats ``repr(frame)`` for a trace log on every frame it receives, even
when nobody logs; hyperframe's DataFrame repr hexlifies the whole payload to keep 20
characters. On a download that is a third of the client's CPU. ``open_channel`` gives our
connections a frame buffer whose DATA frames have a constant-cost repr and are copied
once rather than twice, and offers a larger SETTINGS_MAX_FRAME_SIZE so fewer frames cross
Python. Other users of grpclib/h2 in
the process are untouched. It relies on internals, so it is only used on the exact
versions it was verified on; elsewhere the plain grpclib Channel is used and one warning
says so.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl as _ssl
from asyncio import BaseTransport
from typing import Final

import grpclib
import h2
import hyperframe
from grpclib.encoding.base import CodecBase
from grpclib.client import Channel, Handler
from grpclib.config import Configuration
from grpclib.protocol import H2Protocol
from h2.connection import H2Connection
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, Frame

__all__ = ["TUNING_VERIFIED", "VERIFIED_VERSIONS", "open_channel", "use_tuning"]

logger = logging.getLogger("shardclient.h2tuning")

VERIFIED_VERSIONS: Final = {"grpclib": "0.4.9", "h2": "4.4.1", "hyperframe": "6.1.0"}
"""The exact versions whose internals (H2Protocol.connection_made, H2Connection's
incoming_buffer, hyperframe's Frame._body_repr) this module was tested against."""

FOUND_VERSIONS: Final = {
    "grpclib": grpclib.__version__, "h2": h2.__version__, "hyperframe": hyperframe.__version__
}
"""The versions actually imported (their ``__version__``: cheaper than package metadata,
and exact even when another copy's metadata is on the path)."""

TUNING_VERIFIED: Final = FOUND_VERSIONS == VERIFIED_VERSIONS

use_tuning = TUNING_VERIFIED
"""Whether open_channel tunes its connections; set False to get grpclib's plain Channel."""

max_frame_size: int | None = 1024 * 1024
"""SETTINGS_MAX_FRAME_SIZE offered to the director (HTTP/2's default is 16 KiB)."""

window_size: int | None = None
"""HTTP/2 stream window for tuned channels (None: grpclib's 4 MiB); the connection window
becomes at least four times as large."""

_warned = False


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

    def __next__(self) -> Frame:
        frame = self._next_data_frame() or super().__next__()
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
    """grpclib's protocol, its h2 connection tuned as soon as it exists."""

    def connection_made(self, transport: BaseTransport) -> None:
        super().connection_made(transport)
        tune_connection(self.connection._connection)
        self.connection.flush()


class TunedChannel(Channel):
    """A grpclib Channel whose connections get tune_connection()."""

    def _protocol_factory(self) -> H2Protocol:
        return _TunedProtocol(Handler(), self._config, self._h2_config)


def open_channel(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None,
    config: Configuration,
    codec: CodecBase | None = None,
) -> Channel:
    """A grpclib Channel to ``host:port``: tuned when ``use_tuning``, else the plain one."""
    global _warned
    if use_tuning:
        if window_size is not None:  # the connection's stays at least four streams' worth
            config = dataclasses.replace(
                config,
                http2_connection_window_size=max(
                    4 * window_size, config.http2_connection_window_size
                ),
                http2_stream_window_size=window_size,
            )
        return TunedChannel(host, port, ssl=ssl, config=config, codec=codec)
    if not TUNING_VERIFIED and not _warned:
        _warned = True
        found = ", ".join(f"{name} {have}" for name, have in FOUND_VERSIONS.items())
        wanted = ", ".join(f"{name} {want}" for name, want in VERIFIED_VERSIONS.items())
        logger.warning(
            "HTTP/2 download tuning is off: verified on %s, found %s (downloads are slower)",
            wanted, found,
        )
    return Channel(host, port, ssl=ssl, config=config, codec=codec)

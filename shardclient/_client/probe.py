"""One short look at what a peer speaks, for an error that can only be told by asking: a TLS
server ending a plain-text client's connection in silence, or a plain-text HTTP/2 server
answering a TLS client's hello with its SETTINGS. Each probe is one connection, bounded by
``timeout``, and never raises."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import anyio

from shardclient._client.http2.preface import CLIENT_PREFACE, judge_first_bytes

__all__ = ["PROBE_TIMEOUT", "speaks_plain_http2", "speaks_tls"]

PROBE_TIMEOUT = 1.0
"""Seconds a probe may take."""


async def speaks_tls(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``host:port`` answers a TLS hello as a TLS server does (its certificate is not
    checked: only the protocol matters here)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with anyio.fail_after(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except ssl.SSLError as exc:  # an alert is a TLS server's answer; bytes that are not, not
        return "ALERT" in str(exc.reason or exc)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return True


async def speaks_plain_http2(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``host:port`` answers a plain-text HTTP/2 preface with an HTTP/2 server's
    SETTINGS (a gRPC director started without TLS)."""
    try:
        with anyio.fail_after(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(CLIENT_PREFACE)
                first = await reader.readexactly(9)
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    return judge_first_bytes(first) is None

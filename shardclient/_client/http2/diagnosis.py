"""Why a call failed, as its connection shows it: read defensively off grpclib's and h2's
state (and what a tuned connection noted); on another layout every probe finds nothing."""

from __future__ import annotations

import ssl as _ssl
from dataclasses import dataclass

from grpclib.client import Channel

from shardclient._client.http2.channel import TunedProtocol

__all__ = ["Diagnosis", "diagnose"]


@dataclass(frozen=True)
class Diagnosis:
    """What a failed call's connection showed (see shardclient._client.translate)."""

    garbage: str | None = None
    """Bytes from the peer that are not HTTP/2 (not a gRPC director), described."""
    peer_tls: bool = False
    """Those bytes were a TLS record: the peer speaks TLS (to a plain-text client)."""
    closed_unheard: bool = False
    """A plain-text connection the peer closed before sending a single byte (how a TLS
    server ends a plain-text client's connection; or an outage)."""
    framing: str | None = None
    """What h2 found wrong with the peer's frames."""
    silent: bool = False
    """grpclib closed the connection because a keepalive ping went unanswered."""
    tls_closed_early: str | None = None
    """A TLS connection lost before the peer sent a byte: its alert, or '' without one."""
    goaway: bool = False
    """The peer sent GOAWAY."""
    broken: bool = False
    """grpclib saw the connection end."""
    spoke: bool = True
    """The peer sent anything on the last connection (True when that cannot be known)."""


def diagnose(channel: Channel | None) -> Diagnosis:
    """What ``channel``'s current (or last) connection shows."""
    protocol = _tuned_protocol(channel)
    foreign = protocol.foreign if protocol is not None else None
    return Diagnosis(
        garbage=foreign.what if foreign is not None else unparseable_reply(channel),
        peer_tls=foreign is not None and foreign.tls,
        closed_unheard=protocol is not None
        and not protocol.tls
        and protocol.lost
        and not protocol.heard,
        framing=framing_error(channel),
        silent=went_silent(channel),
        tls_closed_early=early_tls_close(channel),
        goaway=goaway_received(channel),
        broken=connection_broken(channel),
        spoke=director_spoke(channel),
    )


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


def _tuned_protocol(channel: Channel | None) -> TunedProtocol | None:
    """The channel's current connection, when it is a tuned one."""
    protocol = getattr(channel, "_protocol", None)
    return protocol if isinstance(protocol, TunedProtocol) else None


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

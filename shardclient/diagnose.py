"""Explaining a call that timed out from the state grpclib and h2 kept of its connection.

When a peer is not an HTTP/2 gRPC server, grpclib often just waits: h2 reads the first
bytes of an HTTP/1 reply as the header of a multi-megabyte frame and waits for the rest,
and a connection that broke before the call was registered is never reported to it. The
call's deadline ends the wait; these functions say why, so the error names the cause.
They read library internals defensively: on any other layout they find nothing.

One more case: h2 closes its connection state on receiving GOAWAY, so frames the server
still sends for streams in progress (which RFC 9113 allows; gRPC C-core sends the call's
status after GOAWAY "too_many_pings") make h2 raise a protocol error. That is the director
closing the connection, not breaking the protocol; goaway_received tells them apart.
"""

from __future__ import annotations

from grpclib.client import Channel

__all__ = ["connection_broken", "goaway_received", "unparseable_reply"]


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


def goaway_received(channel: Channel | None) -> bool:
    """Whether h2's connection state is CLOSED, which it enters on a GOAWAY from the peer."""
    protocol = getattr(channel, "_protocol", None)
    h2_connection = getattr(getattr(protocol, "connection", None), "_connection", None)
    state = getattr(getattr(h2_connection, "state_machine", None), "state", None)
    return getattr(state, "name", None) == "CLOSED"

"""What the first bytes a peer sends say about it: an HTTP/2 server, or not a gRPC director.

An HTTP/2 server's first frame is SETTINGS (RFC 9113, 3.4): a 9-byte header whose length is
small (its first byte 0) and whose type is 0x4. An HTTP/1 server answers with ``HTTP/``; a
TLS server, where a client spoke plain text, with a TLS record (an alert: 0x15 0x03). Pure
functions; the tuned connection (.channel) judges its first bytes with them, and the TLS
probe (shardclient._client.probe) the bytes a plain-text peer answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["CLIENT_PREFACE", "Foreign", "judge_first_bytes"]

CLIENT_PREFACE: Final = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
)
"""What an HTTP/2 client sends first: the preface and an empty SETTINGS frame."""

_SETTINGS: Final = 0x4
_TLS_CONTENT_TYPES: Final = (0x14, 0x15, 0x16, 0x17)  # change_cipher_spec ... application_data


@dataclass(frozen=True)
class Foreign:
    """A peer whose first bytes are not HTTP/2, described."""

    what: str
    """What it sent, as error messages say it ("answered in HTTP/1, not HTTP/2")."""
    tls: bool = False
    """It sent a TLS record: it speaks TLS."""


def judge_first_bytes(first: bytes) -> Foreign | None:
    """``first`` (the first bytes a peer sent) judged: Foreign when they cannot begin an
    HTTP/2 server's SETTINGS frame, None while they can (or too few arrived to tell)."""
    if not first:
        return None
    if first[0] in _TLS_CONTENT_TYPES and (len(first) < 2 or first[1] == 0x03):
        if len(first) < 3:
            return None
        return Foreign("sent a TLS record where HTTP/2 was expected", tls=True)
    if b"HTTP/".startswith(first[:5]) and len(first) < 5:
        return None
    if first.startswith(b"HTTP/"):
        return Foreign("answered in HTTP/1, not HTTP/2")
    if first[0] != 0 or (len(first) >= 4 and first[3] != _SETTINGS):
        return Foreign(f"sent bytes that are not HTTP/2 (first bytes {first[:9]!r})")
    return None

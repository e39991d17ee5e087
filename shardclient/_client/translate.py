"""Every mapping from grpclib's, h2's, ssl's and the OS's exceptions to shardclient's.

``translate`` decides in this order, the first match winning:

1. the client was closed: ClientClosedError, whatever the call saw;
2. what the connection showed (``Diagnosis``), which says more than the exception grpclib
   raised: a TLS record where a plain-text client expected HTTP/2 (the director speaks TLS),
   bytes that can never be HTTP/2 (an HTTP/1 server, not a director at all), a framing error, a keepalive ping left unanswered, a TLS connection closed before
   any byte (a refused certificate, most likely), GOAWAY, a deadline on a connection the peer
   had closed;
3. the exception itself: a gRPC status (NOT_FOUND on a call about this envoy: the caller's
   ``not_found`` error), a deadline, TLS, a lost stream, a protocol violation, an OS error;
4. anything else is returned unchanged.

A TLS mismatch that the connection cannot show by itself (a TLS server closing a plain-text
connection in silence; a plain-text server answering a TLS hello) is confirmed by one short
probe of the peer (shardclient._client.probe), which the transport runs when
``maybe_tls_mismatch`` says so; ``tls_mismatch`` makes its error. The chunk errors (an
oversized, compressed or truncated message) are made here too.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import grpclib.exceptions
import h2.exceptions
from grpclib.const import Status

from shardclient._client.http2.diagnosis import Diagnosis
from shardclient._errors import (
    ClientClosedError,
    DirectorProtocolError,
    DirectorRPCError,
    DirectorTimeoutError,
    DirectorUnavailableError,
    ShardClientError,
    TLSHandshakeError,
)

__all__ = [
    "NotFound",
    "compressed_message",
    "maybe_tls_mismatch",
    "message_too_large",
    "tls_mismatch",
    "translate",
    "truncated_message",
]

NotFound = Callable[[str], ShardClientError]
"""Makes the error for NOT_FOUND on a call about this envoy, from the director's details."""

_TIMEOUTS = (asyncio.TimeoutError, TimeoutError)
_LOST_HINT = {
    True: "; if this persists, check that the director trusts this client's certificate",
    False: "; if this persists, check whether the director expects TLS",
}
# OpenSSL verification codes (X509_V_ERR_*) a misconfigured envoy meets, with what to check.
_WRONG_CA = "is root_certificate (-rc) the CA that signed the director's certificate?"
_VERIFY_HINTS = {
    2: _WRONG_CA,
    18: _WRONG_CA,
    19: _WRONG_CA,
    20: _WRONG_CA,
    62: "connect with a host name the director's certificate names",
    64: "connect with an address the director's certificate names",
}
# Alerts a TLS server sends when it refuses the client's certificate.
_REFUSAL_ALERTS = (
    "UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_", "UNSUPPORTED_CERTIFICATE", "ACCESS_DENIED",
)  # fmt: skip
_CHECK_CERTIFICATE = "is the certificate signed by the CA the director trusts, and valid now?"


def translate(
    exc: Exception,
    *,
    what: str,
    address: str,
    closed: bool = False,
    diagnosis: Diagnosis | None = None,
    tls: bool = False,
    answered: bool = True,
    keepalive_timeout: float = 0.0,
    not_found: NotFound | None = None,
) -> Exception:
    """Our error for ``exc``, raised by call ``what`` to the director at ``address`` (see the
    module for the order). ``tls`` says whether the connection uses TLS; while nothing was
    ever ``answered``, a lost connection's message hints at a TLS mismatch."""
    if closed:
        return ClientClosedError(f"{what}: client for {address} was closed")
    if diagnosis is not None:
        shown = _from_connection(exc, diagnosis, what, address, tls, keepalive_timeout)
        if shown is not None:
            return shown
    # a hint about TLS set-up only helps while nothing ever got through
    lost_hint = "" if answered else _LOST_HINT[tls]
    return _from_exception(exc, what, address, lost_hint, not_found) or exc


def _from_connection(
    exc: Exception,
    seen: Diagnosis,
    what: str,
    address: str,
    tls: bool,
    keepalive_timeout: float,
) -> ShardClientError | None:
    lost = isinstance(exc, grpclib.exceptions.StreamTerminatedError)
    timed_out = isinstance(exc, _TIMEOUTS)
    tls_hint = "" if tls else ", or does it expect TLS"
    if (lost or timed_out) and seen.peer_tls and not tls:
        return tls_mismatch(what, address, client_tls=False)
    if (lost or timed_out) and seen.garbage is not None:
        return DirectorProtocolError(
            f"{what}: {address} {seen.garbage}: it is not a gRPC director",
            address=address,
        )
    if lost and seen.framing is not None:
        return DirectorProtocolError(
            f"{what}: {address} broke the HTTP/2 protocol: {seen.framing}", address=address
        )
    if lost and seen.silent:
        return DirectorUnavailableError(
            f"{what}: the director at {address} stopped answering (a keepalive ping "
            f"went unanswered for {keepalive_timeout:g} s)",
            address=address,
        )
    if lost and seen.tls_closed_early is not None:
        return tls_closed_early(what, address, seen.tls_closed_early)
    if lost and seen.goaway:
        return DirectorUnavailableError(
            f"{what}: the director at {address} closed the connection (GOAWAY)", address=address
        )
    if timed_out and seen.broken:
        return DirectorProtocolError(
            f"{what}: {address} closed the connection before answering "
            f"(is it a gRPC director{tls_hint}?)",
            address=address,
        )
    return None


def _from_exception(
    exc: Exception, what: str, address: str, lost_hint: str, not_found: NotFound | None
) -> ShardClientError | None:
    if isinstance(exc, grpclib.exceptions.GRPCError):
        details = exc.message or ""
        if exc.status is Status.NOT_FOUND and not_found is not None:
            return not_found(details)
        return DirectorRPCError(
            f"{what} failed at {address}: {exc.status.name}: {details}",
            status=exc.status,
            details=details,
        )
    if isinstance(exc, _TIMEOUTS):
        return DirectorTimeoutError(
            f"{what}: the director at {address} did not answer in time", address=address
        )
    if isinstance(exc, ssl.SSLError):
        return TLSHandshakeError(
            f"{what}: TLS with {address} failed: {_tls_reason(exc)}", address=address
        )
    if isinstance(exc, grpclib.exceptions.StreamTerminatedError):
        reason = str(exc)
        if "protocol" in reason.lower():
            return DirectorProtocolError(
                f"{what}: {address} broke the HTTP/2 protocol (is it a gRPC director?)",
                address=address,
            )
        return DirectorUnavailableError(
            f"{what}: connection to the director at {address} was lost ({reason}){lost_hint}",
            address=address,
        )
    if isinstance(exc, (grpclib.exceptions.ProtocolError, h2.exceptions.ProtocolError)):
        return DirectorProtocolError(
            f"{what}: {address} broke the gRPC protocol: {exc}", address=address
        )
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return DirectorUnavailableError(
            f"{what}: cannot reach the director at {address}: {reason}", address=address
        )
    return None


def _tls_reason(exc: ssl.SSLError) -> str:
    """Why a TLS connection failed, in words: OpenSSL's verification reason for the director's
    certificate, or the director's refusal of ours, with what to check."""
    reason = str(exc.reason or exc.strerror or exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = f"the director's certificate did not verify: {exc.verify_message or reason}"
        hint = _VERIFY_HINTS.get(exc.verify_code)
        return f"{text} ({reason}); {hint}" if hint else f"{text} ({reason})"
    if _is_refusal(reason):
        return f"the director rejected this envoy's certificate ({reason}); {_CHECK_CERTIFICATE}"
    return reason


def _is_refusal(reason: str) -> bool:
    return "ALERT" in reason and any(alert in reason for alert in _REFUSAL_ALERTS)


def tls_closed_early(what: str, address: str, alert: str) -> ShardClientError:
    """The director ended a TLS connection before sending a byte. With a certificate alert it
    refused this envoy's certificate (not retried). Without one (how gRPC C-core refuses a
    certificate under TLS 1.3, and how a TLS proxy with no backend closes) it most likely did:
    retried as an outage, the message saying what to check."""
    if _is_refusal(alert):
        return TLSHandshakeError(
            f"{what}: TLS with {address} failed: the director rejected this envoy's "
            f"certificate ({alert}); {_CHECK_CERTIFICATE}",
            address=address,
        )
    how = f" with {alert}" if alert else ""
    return DirectorUnavailableError(
        f"{what}: the director at {address} closed the TLS connection{how} right after the "
        f"handshake, before any HTTP/2: most likely it rejected this envoy's certificate "
        f"({_CHECK_CERTIFICATE}); or a TLS proxy in front of it has no backend",
        address=address,
    )


def tls_mismatch(what: str, address: str, *, client_tls: bool) -> TLSHandshakeError:
    """One side speaks TLS and the other does not (not retried: it will not pass)."""
    if client_tls:
        text = (
            f"the director at {address} speaks plain text (it was started with "
            "--disable-tls); start the envoy with --disable-tls too (tls=False)"
        )
    else:
        text = (
            f"the director at {address} speaks TLS; this envoy was started with "
            "--disable-tls (tls=False): give it its TLS files (-rc, -pk, -oc) instead"
        )
    return TLSHandshakeError(f"{what}: {text}", address=address)


def maybe_tls_mismatch(exc: Exception, seen: Diagnosis | None, *, tls: bool) -> bool:
    """Whether a failure may be a TLS mismatch that only a probe can confirm: a plain-text
    connection the peer closed before a single byte, or a TLS hello answered with bytes that
    are not TLS (OpenSSL's WRONG_VERSION_NUMBER)."""
    if not tls:
        lost = isinstance(exc, grpclib.exceptions.StreamTerminatedError)
        return lost and seen is not None and seen.closed_unheard
    return isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(exc.reason or exc)


def message_too_large(what: str, length: int, limit: int, address: str) -> DirectorRPCError:
    """A message over ``max_message_size`` (refused as RESOURCE_EXHAUSTED would be)."""
    return DirectorRPCError(
        f"{what}: {address} sent a {length}-byte message, more than max_message_size={limit}",
        status=Status.RESOURCE_EXHAUSTED,
        details=f"message of {length} bytes exceeds the limit of {limit}",
    )


def compressed_message(what: str, address: str) -> DirectorProtocolError:
    """A message flagged compressed, which was never negotiated."""
    return DirectorProtocolError(
        f"{what}: {address} sent a compressed message, which was not negotiated", address=address
    )


def truncated_message(what: str, address: str) -> DirectorProtocolError:
    """A stream that ended in the middle of a message."""
    return DirectorProtocolError(
        f"{what}: {address} ended the stream in the middle of a message", address=address
    )

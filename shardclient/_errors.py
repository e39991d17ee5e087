"""The exceptions shardclient raises: one flat family under ShardClientError.

Every failure a caller can act on has its own class; everything else the director
answers is a DirectorRPCError carrying the gRPC status and details.
"""

from __future__ import annotations

import asyncio
import reprlib
import ssl

import grpclib.exceptions
import h2.exceptions
from grpclib.const import Status

__all__ = [
    "ShardClientError",
    "ShardNotFoundError",
    "ShardRefusedError",
    "DirectorUnavailableError",
    "DirectorTimeoutError",
    "DirectorProtocolError",
    "DirectorRPCError",
    "TLSConfigurationError",
    "TLSHandshakeError",
    "ClientClosedError",
    "ShardDescriptorError",
    "EnvoyConfigError",
    "EnvoyStateError",
    "GpuInfoError",
    "CorruptExperimentDataError",
    "tls_closed_early",
    "describe_value",
]

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 77
_REPR.maxlevel = 2


def describe_value(value: object) -> str:
    """A value and its type for an error message: bounded in length and cost (big containers
    are elided), and safe from a ``__repr__`` that raises."""
    try:  # reprlib bounds containers and str, not bytes: cut those first
        shown = value[:80] if isinstance(value, (bytes, bytearray, memoryview)) else value
        text = _REPR.repr(shown)
    except Exception:  # noqa: BLE001 - any failing __repr__: describe the type alone
        text = "<unprintable>"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


class ShardClientError(Exception):
    """Base class of every error shardclient raises on purpose."""


class ShardNotFoundError(ShardClientError):
    """The director does not know this shard (NOT_FOUND on a health check): re-register."""

    def __init__(self, message: str, *, shard_name: str, details: str = "") -> None:
        super().__init__(message)
        self.shard_name = shard_name
        self.details = details


class ShardRefusedError(ShardClientError):
    """The director refused the shard's registration: its shapes do not match."""

    def __init__(self, message: str, *, sample_shape: list[str], target_shape: list[str]) -> None:
        super().__init__(message)
        self.sample_shape = sample_shape
        self.target_shape = target_shape


class DirectorUnavailableError(ShardClientError):
    """The director cannot be reached, or the connection to it was lost."""

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class DirectorTimeoutError(DirectorUnavailableError):
    """A call's deadline passed before the director answered."""


class DirectorProtocolError(DirectorUnavailableError):
    """The peer broke the gRPC/HTTP/2 protocol (not a director, or a broken one)."""


class DirectorRPCError(ShardClientError):
    """The director answered a call with a gRPC error status."""

    def __init__(self, message: str, *, status: Status, details: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.details = details


class TLSConfigurationError(ShardClientError):
    """TLS was asked for but cannot be set up: a missing, unreadable or invalid file."""


class TLSHandshakeError(ShardClientError):
    """The TLS handshake with the director failed: untrusted certificate, wrong host, refused."""

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class ClientClosedError(ShardClientError):
    """The client was closed before or while the call ran."""


class ShardDescriptorError(ShardClientError, ValueError):
    """A shard descriptor holds a value that cannot go on the wire."""


class EnvoyConfigError(ShardClientError):
    """An envoy config file is missing, malformed, or names something unusable."""


class EnvoyStateError(ShardClientError):
    """The envoy's state file (handled experiments) cannot be read or written; names it."""


class GpuInfoError(ShardClientError):
    """A requested CUDA device cannot be resolved or read through NVML."""


class CorruptExperimentDataError(ShardClientError):
    """An experiment archive chunk does not match its declared size."""


_LOST_HINT = {
    True: "; if this persists, check that the director trusts this client's certificate",
    False: "; if this persists, check whether the director expects TLS",
}


def message_too_large(length: int, limit: int, address: str) -> DirectorRPCError:
    """An archive chunk over ``max_message_size`` (refused as RESOURCE_EXHAUSTED would be)."""
    return DirectorRPCError(
        f"GetExperimentData: {address} sent a {length}-byte message, more than "
        f"max_message_size={limit}",
        status=Status.RESOURCE_EXHAUSTED,
        details=f"message of {length} bytes exceeds the limit of {limit}",
    )


def compressed_message(address: str) -> DirectorProtocolError:
    """A message flagged compressed, which was never negotiated."""
    return DirectorProtocolError(
        f"GetExperimentData: {address} sent a compressed message, which was not negotiated",
        address=address,
    )


def translate_error(
    exc: BaseException,
    *,
    what: str,
    address: str,
    shard_name: str | None = None,
    tls: bool | None = None,
) -> ShardClientError | None:
    """Map an exception from grpclib, h2, ssl or the OS to ours; None when it is not one.

    ``shard_name`` marks calls where NOT_FOUND means the director lost the shard; ``tls``
    (whether the connection uses TLS) adds a hint to a lost connection's message.
    """
    if isinstance(exc, grpclib.exceptions.GRPCError):
        details = exc.message or ""
        if exc.status is Status.NOT_FOUND and shard_name is not None:
            from shardclient._openfl import shard_not_found_class  # it imports this module

            return shard_not_found_class()(
                f"{what}: the director at {address} does not know shard {shard_name!r} "
                f"({details}); register it again",
                shard_name=shard_name,
                details=details,
            )
        return DirectorRPCError(
            f"{what} failed at {address}: {exc.status.name}: {details}",
            status=exc.status,
            details=details,
        )
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
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
        hint = _LOST_HINT[tls] if tls is not None else ""
        return DirectorUnavailableError(
            f"{what}: connection to the director at {address} was lost ({reason}){hint}",
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


# OpenSSL verification codes (X509_V_ERR_*) a misconfigured envoy meets, with what to check.
_VERIFY_HINTS = {
    2: "is root_certificate (-rc) the CA that signed the director's certificate?",
    18: "is root_certificate (-rc) the CA that signed the director's certificate?",
    19: "is root_certificate (-rc) the CA that signed the director's certificate?",
    20: "is root_certificate (-rc) the CA that signed the director's certificate?",
    62: "connect with a host name the director's certificate names",
    64: "connect with an address the director's certificate names",
}
# Alerts a TLS server sends when it refuses the client's certificate.
_REFUSAL_ALERTS = (
    "UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_", "UNSUPPORTED_CERTIFICATE", "ACCESS_DENIED",
)  # fmt: skip
_CHECK_CERTIFICATE = "is the certificate signed by the CA the director trusts, and valid now?"


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

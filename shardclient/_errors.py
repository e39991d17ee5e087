"""The exceptions shardclient raises: one flat family under ShardClientError.

    ShardClientError
    ├── ShardNotFoundError          the director lost the shard: register again (1.5-1.7)
    ├── EnvoyNotFoundError          the director lost the envoy: connect again (1.9)
    ├── ShardRefusedError           the director refused the shard's shapes
    ├── DirectorUnavailableError    unreachable, or the connection was lost
    │   ├── DirectorTimeoutError    a call's deadline passed
    │   └── DirectorProtocolError   the peer is not (or not a working) gRPC director
    ├── DirectorRPCError            any other gRPC status the director answered
    ├── TLSConfigurationError       a TLS file is missing, unreadable or invalid
    ├── TLSHandshakeError           the handshake failed (trust, host name, refusal)
    ├── ClientClosedError           the client was closed before or during the call
    ├── ShardDescriptorError        a descriptor value cannot go on the wire (a ValueError too)
    ├── EnvoyConfigError            an envoy config file is unusable
    ├── EnvoyStateError             the envoy's state file cannot be read or written
    ├── GpuInfoError                a CUDA device cannot be read through NVML
    └── CorruptExperimentDataError  an archive chunk does not match its size field

Beside the family, InvalidArgumentError is the ValueError a bad argument raises: it carries
the argument's name, so that a command line can name its flag. Errors are mapped from
grpclib, h2, ssl and the OS in one place: shardclient._client.translate.
"""

from __future__ import annotations

import sys
from typing import ClassVar, TypeVar

from grpclib.const import Status

__all__ = [
    "ShardClientError",
    "ShardNotFoundError",
    "EnvoyNotFoundError",
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
    "InvalidArgumentError",
]


class ShardClientError(Exception):
    """Base class of every error shardclient raises on purpose."""


_E = TypeVar("_E", bound="_AlsoOpenfl")


class _AlsoOpenfl:
    """An error OpenFL's own envoy catches by type: raised as an instance of OpenFL's class of
    the same role too, whenever OpenFL has loaded that class (it always has where OpenFL's
    envoy runs). Without it, the class is plain ours; openfl is never imported here."""

    openfl_class: ClassVar[tuple[str, str]]
    """The module and name of OpenFL's class of the same role."""

    _made: ClassVar[dict[type[Exception], type[_AlsoOpenfl]]] = {}

    @classmethod
    def compatible(cls: type[_E]) -> type[_E]:
        """``cls``, or a subclass of it and of OpenFL's class when OpenFL has loaded that."""
        module, name = cls.openfl_class
        theirs = getattr(sys.modules.get(module), name, None)
        if not isinstance(theirs, type) or not issubclass(theirs, Exception):
            return cls
        both = _AlsoOpenfl._made.get(theirs)
        if both is None:  # one class per OpenFL class; it names itself (and pickles) as ours
            attributes = {"__module__": cls.__module__, "__doc__": cls.__doc__}
            both = type(cls.__name__, (cls, theirs), attributes)
            _AlsoOpenfl._made[theirs] = both
        assert issubclass(both, cls)
        return both


class ShardNotFoundError(_AlsoOpenfl, ShardClientError):
    """The director does not know this shard (NOT_FOUND on a health check): re-register.

    Raised as OpenFL's ``openfl.transport.grpc.exceptions.ShardNotFoundError`` too when that
    is loaded: OpenFL 1.5-1.7's Envoy re-registers only on that class."""

    openfl_class: ClassVar[tuple[str, str]] = (
        "openfl.transport.grpc.exceptions",
        "ShardNotFoundError",
    )

    def __init__(self, message: str, *, shard_name: str, details: str = "") -> None:
        super().__init__(message)
        self.shard_name = shard_name
        self.details = details


class EnvoyNotFoundError(_AlsoOpenfl, ShardClientError):
    """The OpenFL 1.9 director does not know this envoy (NOT_FOUND on a health check): connect
    again.

    Raised as OpenFL 1.9's
    ``openfl.experimental.workflow.transport.grpc.exceptions.EnvoyNotFoundError`` too when
    that is loaded: OpenFL 1.9's Envoy connects again only on that class."""

    openfl_class: ClassVar[tuple[str, str]] = (
        "openfl.experimental.workflow.transport.grpc.exceptions",
        "EnvoyNotFoundError",
    )

    def __init__(self, message: str, *, envoy_name: str, details: str = "") -> None:
        super().__init__(message)
        self.envoy_name = envoy_name
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


class InvalidArgumentError(ValueError):
    """An argument a caller passed cannot be used. ``argument`` names it (or the entry of it at
    fault, as ``cuda_devices_info[0].name``); the message starts with that name."""

    def __init__(self, message: str, *, argument: str) -> None:
        super().__init__(message)
        self.argument = argument

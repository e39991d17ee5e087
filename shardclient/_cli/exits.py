"""Exit codes, and the one line and code each failure ends the command with.

0 success    1 unexpected error    2 bad command line, or the director refused the shard
3 bad configuration (envoy config, certificate files)    4 director unreachable or TLS
failure    5 --once: the experiment's command failed (reported to the director)
130 / 143 stopped by SIGINT / SIGTERM
"""

from __future__ import annotations

from shardclient._errors import (
    DirectorProtocolError,
    DirectorTimeoutError,
    DirectorUnavailableError,
    EnvoyConfigError,
    EnvoyStateError,
    ShardClientError,
    ShardDescriptorError,
    ShardRefusedError,
    TLSConfigurationError,
    TLSHandshakeError,
)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_EXPERIMENT_FAILED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CommandExit",
    "describe_failure",
    "exit_code",
    "unwrap",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 2
EXIT_CONFIG = 3
EXIT_UNREACHABLE = 4
EXIT_EXPERIMENT_FAILED = 5


class CommandExit(Exception):
    """Leave with ``code`` after printing ``message`` (if any) as the one error line."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code


def unwrap(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups, if there is exactly one."""
    inner = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and len(inner) == 1:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, ShardRefusedError):
        return EXIT_REFUSED
    if isinstance(
        exc,
        (
            EnvoyConfigError,
            EnvoyStateError,
            TLSConfigurationError,
            ShardDescriptorError,
            FileNotFoundError,
            NotADirectoryError,
            PermissionError,
        ),
    ):
        return EXIT_CONFIG
    if isinstance(exc, (DirectorUnavailableError, TLSHandshakeError)):
        return EXIT_UNREACHABLE
    return EXIT_ERROR


def describe_failure(error: BaseException) -> str:
    """The one line an error ends the command with."""
    text = str(error) if isinstance(error, (ShardClientError, OSError)) else repr(error)
    if isinstance(error, DirectorUnavailableError) and not isinstance(
        error, (DirectorProtocolError, DirectorTimeoutError)
    ):
        text += " (--retry-attempts sets how many times a call is tried)"
    return text

"""Connection options every director client takes, validated once at construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from shardclient._checks import check_number
from shardclient._client.retry import RetryPolicy
from shardclient._errors import InvalidArgumentError

__all__ = [
    "ClientOptions",
    "DEFAULT_TIMEOUT",
    "DEFAULT_KEEPALIVE_TIME",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
]

DEFAULT_TIMEOUT = 30.0
"""Seconds a unary call may take (wait_experiment, a long poll, has no deadline)."""

DEFAULT_KEEPALIVE_TIME = 40.0
"""Seconds of silence on a connection before an HTTP/2 ping checks the director is there."""

DEFAULT_KEEPALIVE_TIMEOUT = 20.0
"""Seconds a ping may go unanswered before the connection counts as dead."""

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
"""Largest message accepted from the director; OpenFL sends 2 MiB archive chunks."""


@dataclass(frozen=True)
class ClientOptions:
    """The keyword options both clients accept; bad values raise ValueError at once.

    - ``timeout``: seconds for each unary call, and for each chunk of a download to arrive.
    - ``keepalive_time``: seconds between HTTP/2 pings while a call is in flight (None: no
      pings); with ``keepalive_timeout``, a dead director or a silently dropped connection
      is noticed within their sum even during wait_experiment's long poll.
    - ``retry``: the RetryPolicy for connection failures and UNAVAILABLE (None: no retries).
    - ``max_message_size``: the largest message accepted from the director, in bytes.
    """

    timeout: float = DEFAULT_TIMEOUT
    keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE

    def __post_init__(self) -> None:
        check_number("timeout", self.timeout, minimum=0, allow_equal=False)
        if self.keepalive_time is not None:
            check_number("keepalive_time", self.keepalive_time, minimum=0, allow_equal=False)
        check_number("keepalive_timeout", self.keepalive_timeout, minimum=0, allow_equal=False)
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise InvalidArgumentError(
                f"retry must be a RetryPolicy or None, got {self.retry!r}", argument="retry"
            )
        size = self.max_message_size
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InvalidArgumentError(
                f"max_message_size must be an int > 0 (bytes), got {size!r}",
                argument="max_message_size",
            )

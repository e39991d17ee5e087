"""When and how often a failed call is repeated: exponential backoff with jitter.

One plain loop serves every call: ``call_with_retry`` for a call that is simply repeated, and
``RetryBudget`` for a loop of its own (the long poll, whose budget starts afresh after a cut).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
from grpclib.const import Status

from shardclient._checks import check_number
from shardclient._errors import (
    DirectorProtocolError,
    DirectorRPCError,
    DirectorTimeoutError,
    DirectorUnavailableError,
    InvalidArgumentError,
)

__all__ = ["RetryBudget", "RetryPolicy", "call_with_retry", "is_retryable"]

logger = logging.getLogger("shardclient.client")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retry connection failures and UNAVAILABLE with exponential backoff and jitter.

    The n-th retry waits ``min(initial_delay * multiplier**(n-1), max_delay)`` plus up to
    ``jitter`` random seconds. No attempt starts once ``total_timeout`` seconds have
    passed since the first, and at most ``max_attempts`` attempts are made in all.
    """

    max_attempts: int = 6
    initial_delay: float = 0.5
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5
    total_timeout: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise InvalidArgumentError(
                f"max_attempts must be an int, got {self.max_attempts!r}", argument="max_attempts"
            )
        if self.max_attempts < 1:
            raise InvalidArgumentError(
                f"max_attempts must be >= 1, got {self.max_attempts!r}", argument="max_attempts"
            )
        check_number("initial_delay", self.initial_delay, minimum=0, allow_equal=True)
        check_number("max_delay", self.max_delay, minimum=0, allow_equal=True)
        check_number("multiplier", self.multiplier, minimum=1, allow_equal=True)
        check_number("jitter", self.jitter, minimum=0, allow_equal=True)
        check_number("total_timeout", self.total_timeout, minimum=0, allow_equal=False)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first), jitter included."""
        backoff = self.initial_delay * self.multiplier ** (retry - 1)
        return min(backoff, self.max_delay) + random.uniform(0, self.jitter)


def is_retryable(exc: BaseException) -> bool:
    """Connection failures and UNAVAILABLE only: never timeouts, TLS or protocol failures,
    nor any other status the director answered."""
    if isinstance(exc, DirectorRPCError):
        return exc.status is Status.UNAVAILABLE
    return isinstance(exc, DirectorUnavailableError) and not isinstance(
        exc, (DirectorTimeoutError, DirectorProtocolError)
    )


class RetryBudget:
    """What is left of one call's retries under a policy (None: no retries)."""

    def __init__(self, policy: RetryPolicy | None, what: str) -> None:
        self._policy = policy
        self._what = what
        self.restart()

    def restart(self) -> None:
        """Start afresh: all attempts and the whole total_timeout again."""
        self._started = time.monotonic()
        self._failures = 0

    async def after(self, error: Exception) -> None:
        """Wait before the next attempt after ``error``, or raise ``error`` when it is not
        retryable or the budget is spent. Logs one line per retried failure."""
        policy = self._policy
        self._failures += 1
        if policy is None or not is_retryable(error) or self._failures >= policy.max_attempts:
            raise error
        delay = policy.delay(self._failures)
        if time.monotonic() + delay >= self._started + policy.total_timeout:
            raise error
        cause = str(error).removeprefix(f"{self._what}: ")  # our errors start with the call
        logger.warning(
            "%s: attempt %d of %d failed: %s; next in %.1f s",
            self._what, self._failures, policy.max_attempts, cause, delay,
        )  # fmt: skip
        await anyio.sleep(delay)


async def call_with_retry(
    policy: RetryPolicy | None, what: str, call: Callable[[], Awaitable[T]]
) -> T:
    """Await ``call()``, repeating it under ``policy`` while it fails retryably."""
    budget = RetryBudget(policy, what)
    while True:
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - the budget re-raises what it does not retry
            await budget.after(exc)

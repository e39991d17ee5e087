"""When and how often a failed call is repeated: exponential backoff with jitter (tenacity)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from grpclib.const import Status
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from shardclient._errors import (
    DirectorProtocolError,
    DirectorRPCError,
    DirectorTimeoutError,
    DirectorUnavailableError,
)

__all__ = ["RetryPolicy", "call_with_retry", "check_number", "is_retryable"]

logger = logging.getLogger("shardclient.retry")

T = TypeVar("T")


def check_number(name: str, value: object, *, minimum: float, allow_equal: bool) -> None:
    """ValueError naming ``name`` unless ``value`` is a finite real number above ``minimum``
    (or equal to it, with ``allow_equal``); the one check of numeric options."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum or (value == minimum and not allow_equal):
        bound = ">=" if allow_equal else ">"
        raise ValueError(f"{name} must be finite and {bound} {minimum}, got {value!r}")


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
            raise ValueError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        check_number("initial_delay", self.initial_delay, minimum=0, allow_equal=True)
        check_number("max_delay", self.max_delay, minimum=0, allow_equal=True)
        check_number("multiplier", self.multiplier, minimum=1, allow_equal=True)
        check_number("jitter", self.jitter, minimum=0, allow_equal=True)
        check_number("total_timeout", self.total_timeout, minimum=0, allow_equal=False)


def is_retryable(exc: BaseException) -> bool:
    """Connection failures and UNAVAILABLE only: never timeouts, TLS or protocol failures,
    nor any other status the director answered."""
    if isinstance(exc, DirectorRPCError):
        return exc.status is Status.UNAVAILABLE
    return isinstance(exc, DirectorUnavailableError) and not isinstance(
        exc, (DirectorTimeoutError, DirectorProtocolError)
    )


def _log_retry(what: str, attempts: int) -> Callable[[RetryCallState], None]:
    """One line per failed attempt: which call, which attempt of how many, why, when next."""

    def log(state: RetryCallState) -> None:
        outcome = state.outcome
        cause = str(outcome.exception() if outcome is not None else "")
        cause = cause.removeprefix(f"{what}: ")  # our errors start with the call's name
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "%s: attempt %d of %d failed: %s; next in %.1f s",
            what,
            state.attempt_number,
            attempts,
            cause,
            delay,
        )

    return log


class _stop_before_deadline(stop_base):
    """Stop when the next attempt would start ``total`` seconds or more after ``started``."""

    def __init__(self, started: float, total: float) -> None:
        self.deadline = started + total

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() + retry_state.upcoming_sleep >= self.deadline


async def call_with_retry(
    policy: RetryPolicy | None, what: str, call: Callable[[], Awaitable[T]]
) -> T:
    """Await ``call()``, repeating it under ``policy`` while it fails retryably.

    The first attempt runs without tenacity, whose set-up costs about a tenth of a
    health check; only a retryable failure brings it in, with that failure as attempt 1.
    """
    started = time.monotonic()
    if policy is None:
        return await call()
    try:
        return await call()
    except Exception as exc:
        if not is_retryable(exc):
            raise
        failures = [exc]

    async def attempt() -> T:
        if failures:
            raise failures.pop()  # the first attempt's failure, as tenacity's attempt 1
        return await call()

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts)
        | _stop_before_deadline(started, policy.total_timeout),
        wait=wait_exponential(
            multiplier=policy.initial_delay, exp_base=policy.multiplier, max=policy.max_delay
        )
        + wait_random(0, policy.jitter),
        retry=retry_if_exception(is_retryable),
        before_sleep=_log_retry(what, policy.max_attempts),
        reraise=True,
    )
    return await retrying(attempt)

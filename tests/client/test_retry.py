"""Retries: which failures are retried, how often and how long, each announced once."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from shardclient import (
    AsyncShardDirectorClient,
    DirectorRPCError,
    DirectorUnavailableError,
    RetryPolicy,
    ShardNotFoundError,
)
from shardclient._client.retry import call_with_retry
from shardclient.messages import (
    DirectorBase,
    ExperimentData,
    GetExperimentDataRequest,
    UpdateEnvoyStatusRequest,
    UpdateEnvoyStatusResponse,
)

FAST = RetryPolicy(max_attempts=4, initial_delay=0, max_delay=0, jitter=0, total_timeout=10)
PATIENT = RetryPolicy(max_attempts=50, initial_delay=0.01, max_delay=0.2, jitter=0.01)
"""Rides out a LocalDirector restart (milliseconds) the way the default policy rides out a
real one (seconds)."""


class Flaky(DirectorBase):
    """Fails the first ``failures`` health checks with ``status``, then answers."""

    def __init__(self, status: Status, failures: int) -> None:
        self.status = status
        self.failures = failures
        self.calls = 0

    async def update_envoy_status(
        self, update_envoy_status_request: UpdateEnvoyStatusRequest
    ) -> UpdateEnvoyStatusResponse:
        self.calls += 1
        if self.calls <= self.failures:
            raise GRPCError(self.status, f"failure {self.calls}")
        return UpdateEnvoyStatusResponse(health_check_period=timedelta(seconds=3))

    async def get_experiment_data(
        self, get_experiment_data_request: GetExperimentDataRequest
    ) -> AsyncIterator[ExperimentData]:
        self.calls += 1
        if self.calls <= self.failures:
            raise GRPCError(self.status, f"failure {self.calls}")
        yield ExperimentData(size=3, npbytes=b"abc")


async def _serve(service: DirectorBase) -> tuple[Server, int]:
    server = Server([service])
    await server.start("127.0.0.1", 0)
    port: int = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started
    return server, port


@pytest.mark.anyio
async def test_unavailable_is_retried_with_one_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = Flaky(Status.UNAVAILABLE, failures=2)
    server, port = await _serve(service)
    try:
        async with AsyncShardDirectorClient(
            director_host="127.0.0.1", director_port=port, shard_name="s1", tls=False, retry=FAST
        ) as client:
            with caplog.at_level(logging.WARNING, logger="shardclient.retry"):
                assert (
                    await client.send_health_check(envoy_name="s1", is_experiment_running=False)
                    == 3
                )
    finally:
        server.close()
        await server.wait_closed()
    assert service.calls == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "UNAVAILABLE" in warnings[0] and "next in" in warnings[0]


@pytest.mark.anyio
@pytest.mark.parametrize("status", [Status.NOT_FOUND, Status.INVALID_ARGUMENT, Status.INTERNAL])
async def test_other_statuses_are_not_retried(status: Status) -> None:
    service = Flaky(status, failures=1)
    server, port = await _serve(service)
    try:
        async with AsyncShardDirectorClient(
            director_host="127.0.0.1", director_port=port, shard_name="s1", tls=False, retry=FAST
        ) as client:
            with pytest.raises((DirectorRPCError, ShardNotFoundError)):
                await client.send_health_check(envoy_name="s1", is_experiment_running=False)
    finally:
        server.close()
        await server.wait_closed()
    assert service.calls == 1


@pytest.mark.anyio
async def test_stream_is_retried_before_its_first_chunk() -> None:
    service = Flaky(Status.UNAVAILABLE, failures=2)
    server, port = await _serve(service)
    try:
        async with AsyncShardDirectorClient(
            director_host="127.0.0.1", director_port=port, shard_name="s1", tls=False, retry=FAST
        ) as client:
            chunks = [c.npbytes async for c in client.get_experiment_data("e")]
    finally:
        server.close()
        await server.wait_closed()
    assert chunks == [b"abc"] and service.calls == 3


@pytest.mark.anyio
async def test_retries_stop_after_max_attempts_with_the_last_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[int] = []

    async def call() -> int:
        attempts.append(len(attempts) + 1)
        raise DirectorUnavailableError(f"refused {len(attempts)}", address="here:1")

    policy = RetryPolicy(max_attempts=3, initial_delay=0, max_delay=0, jitter=0)
    with caplog.at_level(logging.WARNING, logger="shardclient.retry"):
        with pytest.raises(DirectorUnavailableError, match="refused 3"):
            await call_with_retry(policy, "Op", call)
    assert attempts == [1, 2, 3]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "Op: attempt 1 of 3 failed: refused 1; next in 0.0 s",
        "Op: attempt 2 of 3 failed: refused 2; next in 0.0 s",
    ]


@pytest.mark.anyio
async def test_total_timeout_counts_from_the_first_attempt() -> None:
    attempts = 0

    async def call() -> int:
        nonlocal attempts
        attempts += 1
        await anyio.sleep(0.05)  # longer than the whole budget: no second attempt may start
        raise DirectorUnavailableError("refused", address="here:1")

    policy = RetryPolicy(max_attempts=5, initial_delay=0, max_delay=0, jitter=0, total_timeout=0.01)
    with pytest.raises(DirectorUnavailableError):
        await call_with_retry(policy, "Op", call)
    assert attempts == 1


@pytest.mark.anyio
async def test_a_first_attempt_that_succeeds_runs_once() -> None:
    attempts = 0

    async def call() -> str:
        nonlocal attempts
        attempts += 1
        return "ok"

    assert await call_with_retry(RetryPolicy(), "Op", call) == "ok"
    assert attempts == 1


def test_retry_policy_rejects_bad_values() -> None:
    for bad in (
        {"max_attempts": 0},
        {"initial_delay": -1},
        {"multiplier": 0.5},
        {"total_timeout": 0},
        {"jitter": float("inf")},
        {"max_attempts": True},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RetryPolicy(**bad)

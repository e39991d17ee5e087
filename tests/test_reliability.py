"""Retries, reconnection after a director restart, long polls that survive dropped
connections, and downloads that never leave partial files."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from shardclient import (
    AsyncShardDirectorClient,
    DirectorRPCError,
    DirectorUnavailableError,
    DownloadedExperiment,
    RetryPolicy,
    ShardDirectorClient,
    ShardNotFoundError,
    archive_filename,
)
from shardclient._retry import call_with_retry
from shardclient.messages import (
    DirectorBase,
    ExperimentData,
    GetExperimentDataRequest,
    UpdateEnvoyStatusRequest,
    UpdateEnvoyStatusResponse,
)
from shardclient.testing import CHUNK_SIZE, LocalDirector
from tests.conftest import SAMPLE_SHAPE, TARGET_SHAPE, Descriptor

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


def test_sync_client_survives_a_director_restart(director: LocalDirector) -> None:
    with ShardDirectorClient(
        director_host=director.host,
        director_port=director.port,
        shard_name="s1",
        tls=False,
        retry=FAST,
    ) as client:
        assert client.report_shard_info(Descriptor(), [])
        port = director.port
        director.restart_sync()
        assert director.port == port
        assert client.send_health_check(envoy_name="s1", is_experiment_running=False) == 7


def test_a_connection_closed_between_calls_costs_at_most_one_retry(
    director: LocalDirector,
) -> None:
    # The loop thread sees the director's FIN as soon as it arrives; a call made before it
    # arrived writes into the dying connection once, and the one retry reconnects.
    one_retry = RetryPolicy(max_attempts=2, initial_delay=0, max_delay=0, jitter=0)
    with ShardDirectorClient(
        director_host=director.host,
        director_port=director.port,
        shard_name="s1",
        tls=False,
        retry=one_retry,
    ) as client:
        assert client.report_shard_info(Descriptor(), [])
        director.restart_sync()  # the connection is closed between two calls
        assert (
            client.send_health_check(
                envoy_name="s1", is_experiment_running=False, raise_on_failure=True
            )
            == 7
        )


def test_long_poll_survives_a_director_restart(director: LocalDirector) -> None:
    with ShardDirectorClient(
        director_host=director.host,
        director_port=director.port,
        shard_name="s1",
        tls=False,
        retry=PATIENT,
        keepalive_time=0.05,
    ) as client:
        client.report_shard_info(Descriptor(), [])
        waited: list[str] = []
        waiter = threading.Thread(target=lambda: waited.append(client.wait_experiment()))
        waiter.start()
        # the long poll is in flight once the director has seen a later call on the same
        # connection (calls are handled in order of arrival on one loop)
        client.send_health_check(envoy_name="s1", is_experiment_running=False)
        director.restart_sync()
        director.submit_experiment("after-restart", b"x", ["s1"])
        waiter.join(30)
    assert waited == ["after-restart"]


@pytest.mark.anyio
async def test_async_client_survives_a_director_restart() -> None:
    local = LocalDirector(sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE)
    async with (
        local,
        AsyncShardDirectorClient(
            director_host=local.host,
            director_port=local.port,
            shard_name="s1",
            tls=False,
            retry=FAST,
        ) as client,
    ):
        assert await client.report_shard_info(Descriptor(), [])
        await local.stop()
        await local.start()
        assert await client.send_health_check(envoy_name="s1", is_experiment_running=False) == 60


# -- downloads ------------------------------------------------------------------------


@pytest.fixture
def client(director: LocalDirector) -> Iterator[ShardDirectorClient]:
    with ShardDirectorClient(
        director_host=director.host, director_port=director.port, shard_name="s1", tls=False
    ) as sync_client:
        yield sync_client


def test_download_is_verified_and_atomic(
    client: ShardDirectorClient, director: LocalDirector, tmp_path: Path
) -> None:
    archive = os.urandom(2 * CHUNK_SIZE + 123)
    director.submit_experiment("exp", archive, ["s1"])
    seen: list[tuple[int, int | None]] = []
    result = client.download_experiment("exp", tmp_path, progress=lambda n, t: seen.append((n, t)))
    assert result == DownloadedExperiment(
        path=tmp_path / "exp.zip", size=len(archive), sha256=hashlib.sha256(archive).hexdigest()
    )
    assert result.path.read_bytes() == archive
    assert seen == [(CHUNK_SIZE, None), (2 * CHUNK_SIZE, None), (len(archive), None)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.zip"]


def test_failed_download_leaves_nothing(client: ShardDirectorClient, tmp_path: Path) -> None:
    (tmp_path / "exp.zip").write_bytes(b"previous")
    with pytest.raises(DirectorRPCError):
        client.download_experiment("exp", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.zip"]
    assert (tmp_path / "exp.zip").read_bytes() == b"previous"


def test_download_into_a_missing_folder(client: ShardDirectorClient, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="absent"):
        client.download_experiment("exp", tmp_path / "absent")


def test_interrupted_download_removes_its_temporary_file(
    client: ShardDirectorClient, director: LocalDirector, tmp_path: Path
) -> None:
    director.submit_experiment("big", b"z" * (8 * CHUNK_SIZE), ["s1"])

    def interrupt(received: int, total: int | None) -> None:
        if received >= 2 * CHUNK_SIZE:
            # what Ctrl-C does to the thread blocked in download_experiment
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        client.download_experiment("big", tmp_path, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    # the client still works afterwards
    assert client.report_shard_info(Descriptor(), [])


@pytest.mark.anyio
async def test_cancelled_download_removes_its_temporary_file(tmp_path: Path) -> None:
    async with LocalDirector(sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE) as local:
        local.submit_experiment("big", b"z" * (8 * CHUNK_SIZE), ["s1"])
        async with AsyncShardDirectorClient(
            director_host=local.host, director_port=local.port, shard_name="s1", tls=False
        ) as client:
            with anyio.CancelScope() as scope:

                def cancel(received: int, total: int | None) -> None:
                    if received >= CHUNK_SIZE:
                        scope.cancel()

                await client.download_experiment("big", tmp_path, progress=cancel)
            assert scope.cancelled_caught
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name",
    ["../x", "/etc/passwd", "a/b", "nul\x00byte", "x" * 5000, ".hidden", "..", "", "ok name"],
)
def test_archive_filename_is_never_a_path(name: str) -> None:
    filename = archive_filename(name)
    assert "/" not in filename and "\x00" not in filename and "\\" not in filename
    assert not filename.startswith(".")
    assert filename.endswith(".zip") and len(filename) <= 120


def test_archive_filename_keeps_plain_names_and_separates_sanitized_ones() -> None:
    assert archive_filename("mnist_v2-run.3") == "mnist_v2-run.3.zip"
    assert archive_filename("a/b") != archive_filename("a_b")
    assert archive_filename("a/b") != archive_filename("a\\b")


def test_downloads_of_sanitized_names_stay_inside_the_folder(
    client: ShardDirectorClient, director: LocalDirector, tmp_path: Path
) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    director.submit_experiment("../escape", b"data", ["s1"])
    result = client.download_experiment("../escape", inside)
    assert result.path.parent == inside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inside"]


_DIRECTOR_PROCESS = f"""
import time
from shardclient.testing import LocalDirector
with LocalDirector(sample_shape={list(SAMPLE_SHAPE)!r}, target_shape={list(TARGET_SHAPE)!r}) as d:
    print(d.port, flush=True)
    time.sleep(600)
"""


def test_long_poll_ends_when_the_director_stops_answering(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A frozen director (SIGSTOP: the kernel still accepts connections, nothing answers) is
    noticed by an unanswered keepalive ping. The poll is sent once more; when the new
    connection hears nothing either, the wait ends with the retry budget instead of being sent
    again forever."""
    process = subprocess.Popen(
        [sys.executable, "-c", _DIRECTOR_PROCESS], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with ShardDirectorClient(
            director_host="127.0.0.1", director_port=port, shard_name="s1", tls=False,
            keepalive_time=0.3, keepalive_timeout=0.3, timeout=5,
            retry=RetryPolicy(max_attempts=100, initial_delay=0.05, max_delay=0.1, total_timeout=1),
        ) as client, caplog.at_level(logging.INFO, logger="shardclient"):  # fmt: skip
            client.report_shard_info(Descriptor(), [])
            os.kill(process.pid, signal.SIGSTOP)
            with pytest.raises(
                DirectorUnavailableError, match="stopped answering .*keepalive ping"
            ):
                client.wait_experiment()
        assert caplog.text.count("polling again") == 1  # once, then the budget ended it
    finally:
        process.kill()
        process.wait()


def test_long_poll_outlives_a_brief_freeze_of_the_director() -> None:
    """A director that stops answering for a moment (a GC pause, a VM migration) after the
    poll has waited longer than the retry budget: the poll is sent again, and still ends with
    the experiment."""
    process = subprocess.Popen(
        [sys.executable, "-c", _DIRECTOR_PROCESS_WITH_LATE_EXPERIMENT],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdin is not None and process.stdout is not None
        port = int(process.stdout.readline())
        with ShardDirectorClient(
            director_host="127.0.0.1", director_port=port, shard_name="s1", tls=False,
            keepalive_time=0.4, keepalive_timeout=1.0, timeout=5,
            retry=RetryPolicy(max_attempts=100, initial_delay=0.05, max_delay=0.1, total_timeout=0.5),
        ) as client:  # fmt: skip
            client.report_shard_info(Descriptor(), [])
            waited: list[str | BaseException] = []

            def wait() -> None:
                try:
                    waited.append(client.wait_experiment())
                except BaseException as exc:  # handed to the test thread
                    waited.append(exc)

            waiter = threading.Thread(target=wait)
            waiter.start()
            time.sleep(1.0)  # the poll has now waited longer than the whole retry budget
            os.kill(process.pid, signal.SIGSTOP)
            # An unanswered ping closes the connection 1.0-1.4 s into the freeze; the poll sent
            # again would give up 2.4-2.8 s in, had the director not come back at 1.9 s.
            time.sleep(1.9)
            os.kill(process.pid, signal.SIGCONT)
            process.stdin.write("submit\n")
            process.stdin.flush()
            waiter.join(30)
        assert waited == ["late"]
    finally:
        process.kill()
        process.wait()


_DIRECTOR_PROCESS_WITH_LATE_EXPERIMENT = f"""
import sys
from shardclient.testing import LocalDirector
with LocalDirector(sample_shape={list(SAMPLE_SHAPE)!r}, target_shape={list(TARGET_SHAPE)!r}) as d:
    print(d.port, flush=True)
    sys.stdin.readline()
    d.submit_experiment("late", b"x", ["s1"])
    sys.stdin.readline()
"""

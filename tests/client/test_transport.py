"""The shared connection across director restarts and freezes: calls and long polls
reconnect, and a long poll ends when the director stops answering."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from shardclient import (
    AsyncShardDirectorClient,
    DirectorUnavailableError,
    RetryPolicy,
    ShardDirectorClient,
)
from shardclient.testing import LocalDirector
from tests.helpers.director import SAMPLE_SHAPE, TARGET_SHAPE, Descriptor

FAST = RetryPolicy(max_attempts=4, initial_delay=0, max_delay=0, jitter=0, total_timeout=10)
PATIENT = RetryPolicy(max_attempts=50, initial_delay=0.01, max_delay=0.2, jitter=0.01)
"""Rides out a LocalDirector restart (milliseconds) the way the default policy rides out a
real one (seconds)."""


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

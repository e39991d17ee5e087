"""The programs' log output: a stderr that stops moving never holds up the code that logs;
what does not fit is dropped, counted, and the count is written once the output moves."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pytest

from shardclient._log import QUEUE_RECORDS, OnceLog, install_handler, stop_output


class _StalledStream(io.StringIO):
    """A stream whose writes wait until it is released (a pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()
        self.first_write = threading.Event()

    def write(self, text: str) -> int:
        self.first_write.set()
        self.released.wait()
        return super().write(text)


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    stop_output()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logging_never_waits_for_a_stalled_output(restore_root: None) -> None:
    stream = _StalledStream()
    install_handler("info", stream=stream)
    log = logging.getLogger("shardclient.envoy")
    log.info("first")
    assert stream.first_write.wait(10)  # the output's thread is now stuck writing it
    for number in range(3 * QUEUE_RECORDS):  # returns although nothing can be written
        log.info("line %d", number)
    stream.released.set()
    stop_output()
    text = stream.getvalue()
    assert "first" in text and "line 0" in text
    dropped = 3 * QUEUE_RECORDS - QUEUE_RECORDS  # one queue's worth waited to be written
    assert f"{dropped} log records were dropped: the log output did not keep up" in text


def test_records_come_out_in_order_and_complete_when_nothing_stalls(
    restore_root: None,
) -> None:
    stream = io.StringIO()
    install_handler("info", fmt="json", stream=stream)
    log = logging.getLogger("shardclient.cli")
    for number in range(100):
        log.info("record %d", number)
    stop_output()
    lines = stream.getvalue().splitlines()
    assert [line.count(f'"record {n}"') for n, line in enumerate(lines)] == [1] * 100
    assert "dropped" not in stream.getvalue()


def test_once_log_says_a_problem_once_and_its_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    once = OnceLog(logging.getLogger("shardclient.test"), "health check")
    with caplog.at_level(logging.WARNING, logger="shardclient.test"):
        for _ in range(3):
            once.problem("outage", "director unreachable")
        assert once.failing
        once.recovered("back")
        once.recovered("back")
    assert [r.getMessage() for r in caplog.records] == [
        "health check: director unreachable (logged once until it recovers)",
        "health check: back",
    ]

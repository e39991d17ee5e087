"""Logging: one logger per layer, logging a problem once until it recovers, and the output the
programs (the shardclient command, the collaborator child) install.

Loggers are named ``shardclient.<layer>``: ``shardclient.client`` (the director clients and
their transport), ``shardclient.envoy`` (the envoy and its experiments), ``shardclient.gpu``,
``shardclient.cli``, ``shardclient.config``. The library only logs; installing handlers is
the programs' business.

A program's log output never holds up the thread that logs (the envoy's event loop, whose
health checks must keep their period): records go into a bounded queue without waiting, and
a thread of the output's own writes them to stderr. When stderr does not keep up (a paused
terminal, a log pipeline that stalls), the records that do not fit are dropped, counted, and
the count is written once the output moves again.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
import threading
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

__all__ = ["OnceLog", "install_handler", "stop_output"]

QUEUE_RECORDS = 1000
"""Records the output holds while stderr is blocked; more are dropped and counted."""

_FINISH_TIMEOUT = 5.0  # seconds stop_output waits for a stalled output


class OnceLog:
    """Logs each kind of problem once until it recovers, then says so once.

    Later reports of a kind already logged go out at DEBUG, so an outage or a broken GPU
    costs one line, not one per health check."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._seen: set[str] = set()

    @property
    def failing(self) -> bool:
        """Whether a problem was logged and has not recovered since."""
        return bool(self._seen)

    def problem(self, kind: str, message: str, *, until: str = "until it recovers") -> None:
        """Log ``message`` the first time ``kind`` is reported; ``until`` ends the line."""
        if kind in self._seen:
            self._logger.debug("%s: %s", self._what, message)
            return
        self._seen.add(kind)
        self._logger.warning("%s: %s (logged once %s)", self._what, message, until)

    def recovered(self, message: str = "recovered") -> None:
        """Say ``message`` if a problem was logged, and forget the problems."""
        if self._seen:
            self._seen.clear()
            self._logger.warning("%s: %s", self._what, message)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _NonBlockingHandler(QueueHandler):
    """Puts records into a bounded queue, never waiting for room; counts what it drops."""

    def __init__(self, records: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(records)
        self.queue: queue.Queue[logging.LogRecord | None] = records
        self._lock = threading.Lock()
        self._dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self._dropped += 1

    def take_dropped(self) -> int:
        """How many records were dropped since the last call."""
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        return dropped


class _Writer(QueueListener):
    """Writes queued records to stderr from a thread of its own; after a record went out, it
    says how many were dropped before it (the output moves again)."""

    def __init__(self, source: _NonBlockingHandler, stream: logging.Handler) -> None:
        super().__init__(source.queue, stream)
        self._source = source
        self._records = source.queue

    def handle(self, record: logging.LogRecord) -> None:
        super().handle(record)
        self.report_dropped()

    def finish(self, timeout: float = _FINISH_TIMEOUT) -> bool:
        """Write what the queue holds and end the thread, waiting at most ``timeout`` seconds
        for each (an output stuck for good must not hang the program's exit); True when it
        ended."""
        thread = self._thread
        if thread is None:
            return True
        try:
            self._records.put(None, timeout=timeout)  # None: QueueListener's end marker
        except queue.Full:
            return False  # the thread, a daemon, is left to the interpreter's exit
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._thread = None
        return True

    def report_dropped(self) -> None:
        """Write how many records were dropped since the last report, if any were."""
        dropped = self._source.take_dropped()
        if dropped:
            note = logging.makeLogRecord(
                {
                    "name": "shardclient",
                    "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": f"{dropped} log records were dropped: the log output did not keep up",
                }
            )
            super().handle(note)


_output: tuple[_NonBlockingHandler, _Writer] | None = None
_at_exit = False


def install_handler(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` and above to ``stream`` (stderr), as text lines or
    JSON objects (``fmt``), through the non-blocking output (see above), replacing the root
    logger's handlers. For programs, never for the library."""
    global _output, _at_exit
    if not _at_exit:
        atexit.register(stop_output)  # the program's last records reach its output
        _at_exit = True
    stop_output()
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(QUEUE_RECORDS)
    front = _NonBlockingHandler(records)
    writer = _Writer(front, handler)
    writer.start()
    _output = (front, writer)
    root = logging.getLogger()
    root.handlers[:] = [front]
    root.setLevel(level.upper())


def stop_output() -> None:
    """Write what the output still holds and end its thread (before a program's last words,
    and at exit). Records logged afterwards are dropped until install_handler runs again."""
    global _output
    if _output is None:
        return
    _, writer = _output
    _output = None
    if writer.finish():
        writer.report_dropped()

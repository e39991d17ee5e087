"""Logging: one logger per layer, logging a problem once until it recovers, and the handler the
programs (the shardclient command, the collaborator child) install.

Loggers are named ``shardclient.<layer>``: ``shardclient.client`` (the director clients and
their transport), ``shardclient.envoy`` (the envoy and its experiments), ``shardclient.gpu``,
``shardclient.cli``. The library only logs; installing handlers is the programs' business.
"""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["OnceLog", "install_handler"]


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


def install_handler(level: str, fmt: str = "text") -> None:
    """Send every log record at ``level`` and above to stderr, as text lines or JSON objects
    (``fmt``), replacing the root logger's handlers. For programs, never for the library."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

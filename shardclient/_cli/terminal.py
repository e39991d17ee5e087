"""The terminal: download progress (a rich bar, or log lines when not a terminal) and the
review prompt, which pauses the bar while it asks."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

import anyio.to_thread

from shardclient import ProgressCallback
from shardclient._text import printable

if TYPE_CHECKING:  # rich is imported only when a terminal shows a progress bar
    from rich.progress import Progress

__all__ = ["Terminal", "ask_on_terminal"]

logger = logging.getLogger("shardclient.cli")


class Terminal:
    """Download progress (a rich bar on a terminal, log lines otherwise) and the review
    prompt, which pauses the bar while it asks."""

    def __init__(self) -> None:
        self._bar: Progress | None = None

    def __enter__(self) -> Terminal:
        if sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )

            # transient: the result line (or the envoy's log line) states the final size once
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                transient=True,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def progress(self, name: str) -> ProgressCallback:
        bar = self._bar
        if bar is not None:
            for finished in list(bar.task_ids):  # one bar: the download in progress
                bar.remove_task(finished)
            task = bar.add_task(f"downloading {printable(name, 60)}", total=None)

            def update_bar(received: int, total: int | None) -> None:
                bar.update(task, completed=received, total=total)

            return update_bar
        last = [0.0]

        def update_log(received: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= 2.0:
                last[0] = now
                logger.info("Downloading %s: %.1f MiB so far", printable(name), received / 2**20)

        return update_log

    async def approve(self, text: str) -> bool | None:
        bar = self._bar
        if bar is not None:
            bar.stop()
        try:
            return await anyio.to_thread.run_sync(
                ask_on_terminal, f"{text}\nApprove?", abandon_on_cancel=True
            )
        finally:
            if bar is not None:
                bar.start()


def ask_on_terminal(
    question: str, *, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> bool | None:
    """Show ``question`` and read a yes/no answer. None when there is no terminal to ask on
    (stdin is not a tty); False for anything but yes, and on end of input. Blocks: call it
    from a worker thread."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stderr if stdout is None else stdout
    try:
        interactive = stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        interactive = False
    if not interactive:
        return None
    stdout.write(f"{question} [y/N] ")
    stdout.flush()
    answer = stdin.readline()
    if not answer.endswith("\n"):
        stdout.write("\n")
    return answer.strip().lower() in ("y", "yes")

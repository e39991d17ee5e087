"""Running a command's coroutine: a fresh event loop that SIGINT and SIGTERM cancel.

The command owns the process, so it (not the library) listens for the signals, for as long
as the coroutine runs.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from shardclient._cli.exits import CommandExit

__all__ = ["run_async"]

logger = logging.getLogger("shardclient.cli")

T = TypeVar("T")


def run_async(func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func()`` on a fresh event loop. SIGINT or SIGTERM cancels it (so its cleanup
    runs: a partial download is removed, a running command stopped) and exits 130 / 143."""

    async def main() -> T:
        received: list[int] = []
        results: list[T] = []
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    async for signum in signals:
                        logger.info("Stopping on %s", signal.Signals(signum).name)
                        received.append(signum)
                        group.cancel_scope.cancel()
                        return

                group.start_soon(watch)
                results.append(await func())
                group.cancel_scope.cancel()
        if received:
            raise CommandExit(128 + received[0])
        return results[0]

    return anyio.run(main)

"""Running an experiment's program (the collaborator, pip, an --exec command) as a child.

The envoy tracks processes, not pipes. The child runs in a process group of its own with its
stdout and stderr going straight to a log file; the run ends when the child exits, whatever
its own children still hold open. Then the whole group is stopped (SIGTERM, SIGKILL after a
grace period), and likewise on cancellation (Ctrl-C, SIGTERM to the envoy). New output is
copied from the log file into the envoy's log in bounded slices (a flood is skipped with a
note, never waited for), and the last characters of the file become the failure description.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import Process

from shardclient._text import printable

__all__ = ["ProcessResult", "TAIL_CHARS", "read_tail", "run_in_group"]

logger = logging.getLogger("shardclient.envoy")

TAIL_CHARS = 4000
"""Characters of a failed program's output sent to the director as the error description."""

_MIRROR_INTERVAL = 0.5  # seconds between two looks at the log file
_MIRROR_SLICE = 64 * 1024  # bytes copied into the envoy's log per look at most
_MIRROR_BACKLOG = 1024 * 1024  # more unread than this: skip ahead
_GROUP_POLL = 0.05  # seconds between two checks that a stopped group is gone
_KILL_WAIT = 2.0  # seconds to let SIGKILLed processes go (zombies may linger: bounded)


@dataclass(frozen=True)
class ProcessResult:
    """How the child ended: its exit code (negative: killed by that signal) and output tail."""

    exit_code: int
    tail: str


def read_tail(path: Path, chars: int = TAIL_CHARS, start: int = 0) -> str:
    """The last ``chars`` characters of a (UTF-8, possibly broken) text file, from byte
    ``start`` on; '' if absent."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(start, size - 4 * chars))
            data = file.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")[-chars:]


class _Mirror:
    """Copies what the child appends to its log file into the envoy's log, boundedly."""

    def __init__(self, path: Path, label: str, start: int) -> None:
        self._path = path
        self._label = label
        self._position = start  # what the file held before this program wrote to it
        self._partial = b""

    def step(self) -> None:
        try:
            with self._path.open("rb") as file:
                size = file.seek(0, os.SEEK_END)
                if size - self._position > _MIRROR_BACKLOG:
                    skipped = size - _MIRROR_SLICE - self._position
                    logger.info(
                        "%s: [%d bytes of output skipped; all of it is in %s]",
                        self._label,
                        skipped,
                        self._path,
                    )
                    self._position = size - _MIRROR_SLICE
                    self._partial = b""
                file.seek(self._position)
                data = file.read(_MIRROR_SLICE)
        except OSError:
            return
        self._position += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > _MIRROR_SLICE:  # a "line" that never ends
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            logger.info("%s: %s", self._label, _shown(line))

    def flush(self) -> None:
        self.step()
        if self._partial:
            logger.info("%s: %s", self._label, _shown(self._partial))
            self._partial = b""


def _shown(line: bytes) -> str:
    """A line of a program's output as safe log text: control characters (a colour code, a
    terminal title) escaped, whatever the experiment printed."""
    return printable(line.decode("utf-8", errors="replace").rstrip(), _MIRROR_SLICE)


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when no process of it is left. A group we may
    not signal (a member changed its credentials: sudo) counts as still there."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _reap(process: Process, pgid: int, grace: float) -> None:
    """Stop every process of the child's group (SIGTERM, then SIGKILL after ``grace``
    seconds) and reap the child itself."""
    with anyio.move_on_after(grace) as waited:
        if _signal_group(pgid, signal.SIGTERM):
            await process.wait()
            while _signal_group(pgid, 0):  # what the child left behind
                await anyio.sleep(_GROUP_POLL)
    if waited.cancelled_caught:
        logger.warning("Process group %d outlived SIGTERM by %.0f s; killing it", pgid, grace)
        _signal_group(pgid, signal.SIGKILL)
        if process.returncode is None:  # it left the group (setsid): kill it directly
            with contextlib.suppress(OSError):
                process.kill()
        with anyio.move_on_after(_KILL_WAIT):
            await process.wait()
            while _signal_group(pgid, 0):
                await anyio.sleep(_GROUP_POLL)
    with anyio.move_on_after(_KILL_WAIT) as abandoned:
        await process.wait()
    if abandoned.cancelled_caught:
        logger.error("Process %d cannot be stopped (not ours to signal?); leaving it", pgid)
        return
    await process.aclose()


async def run_in_group(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    label: str,
    grace: float = 10.0,
) -> ProcessResult:
    """Run ``argv`` in its own process group, output appended to ``log_path``; return when it
    exits, after its group has been stopped. OSError when it cannot be started."""
    with log_path.open("ab") as log_file:
        start = log_file.seek(0, os.SEEK_END)  # earlier programs' output is not this one's
        process = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    pgid = process.pid  # a new session's leader: its pid is the group id
    mirror = _Mirror(log_path, label, start)
    try:
        async with anyio.create_task_group() as group:

            async def copy_output() -> None:
                while True:
                    await anyio.sleep(_MIRROR_INTERVAL)
                    mirror.step()

            group.start_soon(copy_output)
            code = await process.wait()
            group.cancel_scope.cancel()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _reap(process, pgid, grace)
            mirror.flush()
        raise
    with anyio.CancelScope(shield=True):
        await _reap(process, pgid, grace)
    mirror.flush()
    return ProcessResult(exit_code=code, tail=read_tail(log_path, start=start))

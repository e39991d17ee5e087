"""Saving an experiment archive: verified chunks into a temporary file, renamed when complete.

Nothing but the finished archive ever appears under its final name: the chunks go to a
hidden temporary file in the destination folder, which is flushed, fsynced and atomically
renamed only after the stream ended cleanly, and removed on any error or cancellation.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from shardclient.errors import CorruptExperimentDataError
from shardclient.messages import ExperimentData

__all__ = ["DownloadedExperiment", "ProgressCallback", "archive_filename", "save_archive"]

ProgressCallback = Callable[[int, "int | None"], None]
"""Called with (bytes received so far, total bytes or None when the director does not say)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 100


@dataclass(frozen=True)
class DownloadedExperiment:
    """A complete archive on disk: where it is, how many bytes, their SHA-256 (hex)."""

    path: Path
    size: int
    sha256: str


def archive_filename(experiment_name: str) -> str:
    """A safe file name for an experiment's archive: ``<name>.zip`` when the name is
    harmless, otherwise a sanitized stem plus a digest of the full name (so distinct
    names never collide). Never a path: no separators, no leading dot, no NUL."""
    if not isinstance(experiment_name, str):
        raise ValueError(f"experiment name must be a str, got {experiment_name!r}")
    stem = _UNSAFE.sub("_", experiment_name).lstrip(".")
    if stem == experiment_name and 0 < len(stem) <= _MAX_STEM:
        return f"{stem}.zip"
    digest = hashlib.sha256(experiment_name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    stem = stem[:_MAX_STEM].rstrip("._") or "experiment"
    return f"{stem}-{digest}.zip"


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported here (e.g. some network file systems); the rename stands
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


async def save_archive(
    chunks: AsyncIterator[ExperimentData],
    destination: Path,
    *,
    progress: ProgressCallback | None = None,
) -> DownloadedExperiment:
    """Write ``chunks`` to ``destination`` atomically, checking each chunk's size field."""
    directory = destination.parent
    if not directory.is_dir():
        raise NotADirectoryError(f"download folder does not exist: {directory}")
    fd, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=directory)
    digest = hashlib.sha256()
    received = 0
    try:
        with open(fd, "wb", buffering=0) as out:
            async for chunk in chunks:
                data = chunk.npbytes
                if chunk.size != len(data):
                    raise CorruptExperimentDataError(
                        f"broken archive: chunk {received}..: size field says {chunk.size} "
                        f"bytes, the chunk holds {len(data)}"
                    )
                out.write(data)
                digest.update(data)
                received += len(data)
                if progress is not None:
                    progress(received, None)
            await anyio.to_thread.run_sync(os.fsync, out.fileno())
        os.replace(temporary, destination)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    await anyio.to_thread.run_sync(_fsync_directory, directory)
    return DownloadedExperiment(path=destination, size=received, sha256=digest.hexdigest())

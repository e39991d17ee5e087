"""Saving an experiment archive: verified chunks into a temporary file, renamed when complete.

Nothing but the finished archive ever appears under its final name: the chunks go to a
hidden temporary file in the destination folder, which is flushed, fsynced and atomically
renamed only after the stream ended cleanly, and removed on any error or cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import FileIO
from pathlib import Path

import anyio

from shardclient._errors import CorruptExperimentDataError
from shardclient._fs import fsync_directory

__all__ = ["DownloadedExperiment", "ProgressCallback", "RawChunk", "save_archive"]

ProgressCallback = Callable[[int, "int | None"], None]
"""Called with (bytes received so far, total bytes or None when the director does not say)."""

overlap_writes = True
"""Whether a chunk is written while the next one is received (bench/throughput.py compares)."""


@dataclass
class RawChunk:
    """An archive chunk whose bytes stay in the pieces that carried them (not for keeping)."""

    size: int
    """The message's size field."""
    pieces: list[bytes | memoryview]
    """The archive bytes, in order; ``b"".join(pieces)`` is the field's value."""

    @property
    def length(self) -> int:
        """How many archive bytes the pieces hold."""
        return sum(len(piece) for piece in self.pieces)


@dataclass(frozen=True)
class DownloadedExperiment:
    """A complete archive on disk: where it is, how many bytes, their SHA-256 (hex)."""

    path: Path
    size: int
    sha256: str


def _create_temporary(directory: Path, name: str) -> tuple[int, Path]:
    """A new hidden ``.name.<random>.part`` file in ``directory``, opened for writing.

    Created with mode 0666 less the umask, as ``open()`` would (tempfile's 0600 would leave
    the finished archive readable by its owner only, unlike any other download).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # Windows
    for _ in range(100):
        path = directory / f".{name}.{secrets.token_hex(6)}.part"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name!r} in {directory}")


def _write_all(out: FileIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = out.write(view)  # a raw file may write less than asked
        view = view[written or 0 :]


async def save_archive(
    chunks: AsyncIterator[RawChunk],
    destination: Path,
    *,
    progress: ProgressCallback | None = None,
) -> DownloadedExperiment:
    """Write ``chunks`` to ``destination`` atomically, checking each chunk's size field.

    Each chunk is written and hashed in a worker thread while the next one is received
    (both release the GIL), so the disk and SHA-256 overlap the network; at most one chunk
    is in the thread at a time, so memory stays at a couple of chunks.
    """
    directory = destination.parent
    if not directory.is_dir():
        raise NotADirectoryError(f"download folder does not exist: {directory}")
    fd, temporary = _create_temporary(directory, destination.name)
    digest = hashlib.sha256()
    received = 0
    loop = asyncio.get_running_loop()
    try:
        with open(fd, "wb", buffering=0) as out:

            def store(pieces: list[bytes | memoryview]) -> None:
                for piece in pieces:
                    _write_all(out, piece)
                    digest.update(piece)

            writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shardclient-save")
            try:
                pending: asyncio.Future[None] | None = None
                async for chunk in chunks:
                    length = chunk.length
                    if chunk.size != length:
                        raise CorruptExperimentDataError(
                            f"broken archive: chunk {received}..: size field says "
                            f"{chunk.size} bytes, the chunk holds {length}"
                        )
                    if pending is not None:
                        await pending  # the previous chunk is on disk (or its error raises)
                    pending = loop.run_in_executor(writer, store, chunk.pieces)
                    if not overlap_writes:
                        await pending
                        pending = None
                    received += length
                    if progress is not None:
                        progress(received, None)
                if pending is not None:
                    await pending
                # on the writer too, so that the shutdown below also waits for it
                await loop.run_in_executor(writer, os.fsync, out.fileno())
            finally:
                # no write (or fsync) may outlive the file, even on error or cancellation;
                # blocks the loop only for the one chunk that may be in flight
                writer.shutdown(wait=True)
                closer = getattr(chunks, "aclose", None)
                if closer is not None:  # end the stream now, not when it is collected
                    with anyio.CancelScope(shield=True):
                        await closer()
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    # after the rename the archive is complete: nothing may cancel its success now
    fsync_directory(directory)
    return DownloadedExperiment(path=destination, size=received, sha256=digest.hexdigest())

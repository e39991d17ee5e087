"""Downloads: save_archive writes in a worker thread, overlapped with receiving (same file, same
hash, same errors as writing inline), and a download through the client is verified and atomic:
nothing is left behind on failure or cancellation, and no write outlives the file."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from shardclient import (
    AsyncShardDirectorClient,
    DirectorRPCError,
    DownloadedExperiment,
    ShardDirectorClient,
)
from shardclient._client import download
from shardclient._client.download import RawChunk
from shardclient._errors import CorruptExperimentDataError
from shardclient.testing import CHUNK_SIZE, LocalDirector
from tests.helpers.director import SAMPLE_SHAPE, TARGET_SHAPE, Descriptor

pytestmark = pytest.mark.anyio


def _chunks(*parts: bytes, lie_at: int | None = None) -> AsyncIterator[RawChunk]:
    async def produce() -> AsyncIterator[RawChunk]:
        for index, part in enumerate(parts):
            size = len(part) + 1 if index == lie_at else len(part)
            # each part in pieces, as frames deliver it: a view, and a bytes tail
            yield RawChunk(size=size, pieces=[memoryview(part)[:-1], part[-1:]])

    return produce()


@pytest.fixture(params=[True, False], ids=["overlapped", "inline"])
def overlap(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    value: bool = request.param
    monkeypatch.setattr(download, "overlap_writes", value)
    return value


async def test_bytes_hash_and_progress(overlap: bool, tmp_path: Path) -> None:
    parts = [bytes([i]) * (100_000 + i) for i in range(20)] + [b""]
    seen: list[int] = []
    result = await download.save_archive(
        _chunks(*parts), tmp_path / "a.zip", progress=lambda done, total: seen.append(done)
    )
    whole = b"".join(parts)
    assert result.path.read_bytes() == whole
    assert result.size == len(whole)
    assert result.sha256 == hashlib.sha256(whole).hexdigest()
    assert seen[-1] == len(whole) and seen == sorted(seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


async def test_lying_chunk_leaves_nothing(overlap: bool, tmp_path: Path) -> None:
    with pytest.raises(CorruptExperimentDataError, match="size field says 4"):
        await download.save_archive(_chunks(b"aa", b"bbb", b"cc", lie_at=1), tmp_path / "a.zip")
    assert list(tmp_path.iterdir()) == []


async def test_write_error_is_raised_as_is(
    overlap: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = download._write_all
    calls = 0

    def failing(out: object, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        real(out, data)  # type: ignore[arg-type]

    monkeypatch.setattr(download, "_write_all", failing)
    with pytest.raises(OSError, match="No space left") as caught:
        await download.save_archive(_chunks(b"a", b"b", b"c", b"d"), tmp_path / "a.zip")
    assert type(caught.value) is OSError
    assert list(tmp_path.iterdir()) == []


async def test_cancellation_waits_for_the_write_in_flight(
    overlap: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while a chunk is being written: the write finishes before the file is
    removed (never a write into a closed, possibly reused, descriptor)."""
    writing, release = threading.Event(), threading.Event()
    finished: list[bool] = []
    real = download._write_all

    def slow(out: object, data: bytes) -> None:
        if data == b"slow":
            writing.set()
            release.wait(5)
        real(out, data)  # type: ignore[arg-type]
        finished.append(True)

    async def chunks() -> AsyncIterator[RawChunk]:
        yield RawChunk(size=4, pieces=[b"slow"])
        yield RawChunk(size=4, pieces=[b"next"])
        await anyio.sleep_forever()

    monkeypatch.setattr(download, "_write_all", slow)
    with anyio.CancelScope() as scope:

        async def cancel_when_writing() -> None:
            await anyio.to_thread.run_sync(writing.wait, 5)
            scope.cancel()
            release.set()

        async with anyio.create_task_group() as group:
            group.start_soon(cancel_when_writing)
            await download.save_archive(chunks(), tmp_path / "a.zip")
    assert scope.cancelled_caught
    assert finished  # the write in flight completed before save_archive returned
    assert list(tmp_path.iterdir()) == []


async def test_short_writes_are_completed(tmp_path: Path) -> None:
    class Trickle:
        def __init__(self) -> None:
            self.written = bytearray()

        def write(self, data: memoryview) -> int:
            self.written += data[:3]
            return min(3, len(data))

    out = Trickle()
    download._write_all(out, b"0123456789")  # type: ignore[arg-type]
    assert out.written == b"0123456789"


def _umask() -> int:
    """This process's umask, read without setting it (os.umask would change it for everyone)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    pytest.skip("no Umask line in /proc/self/status (Linux 4.7+) to compare with")


async def test_the_archive_gets_the_mode_open_would_give(tmp_path: Path) -> None:
    result = await download.save_archive(_chunks(b"zip"), tmp_path / "a.zip")
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o666 & ~_umask()


async def test_a_taken_temporary_name_is_skipped_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    names = iter(["taken", "free"])
    monkeypatch.setattr(secrets, "token_hex", lambda _: next(names))
    (tmp_path / ".a.zip.taken.part").symlink_to(target)
    result = await download.save_archive(_chunks(b"zip"), tmp_path / "a.zip")
    assert result.path.read_bytes() == b"zip" and target.read_bytes() == b"keep"


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


def test_downloads_of_sanitized_names_stay_inside_the_folder(
    client: ShardDirectorClient, director: LocalDirector, tmp_path: Path
) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    director.submit_experiment("../escape", b"data", ["s1"])
    result = client.download_experiment("../escape", inside)
    assert result.path.parent == inside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inside"]

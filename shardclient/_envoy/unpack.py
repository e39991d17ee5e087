"""Unpacking an experiment archive (a zip from the director) safely.

The archive is untrusted. Every member is checked before anything is written: no absolute
paths, no ``..``, no backslashes or NUL in names, no duplicates, no symlinks, devices, FIFOs
or sockets, no encryption; the member count, the total unpacked size and each member's
compression ratio are bounded (zip bombs). Members are written into a hidden temporary folder
beside the destination, with the bytes actually decompressed counted against the limits, and
the folder is renamed into place only when everything is out: a refused or broken archive
leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["ArchiveRefusedError", "UnpackLimits", "check_member_name", "unpack_archive"]

_COPY_BLOCK = 1024 * 1024
_MAX_NAME_BYTES = 255  # one path component, as Linux file systems allow


class ArchiveRefusedError(Exception):
    """The archive is not a zip, or one of its members is unsafe or over a limit."""


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds on what an archive may unpack to."""

    max_total_bytes: int = 8 * 1024**3
    max_members: int = 100_000
    max_ratio: float = 200.0
    """Largest uncompressed/compressed ratio for a member over ``ratio_floor`` bytes."""
    ratio_floor: int = 1024 * 1024


def check_member_name(name: str) -> PurePosixPath:
    """The relative path a member's name stands for; ArchiveRefusedError when it would land
    outside the destination or cannot be a portable file name."""
    if not name or "\x00" in name or "\\" in name:
        raise ArchiveRefusedError(f"member {name!r}: not a safe file name")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise ArchiveRefusedError(f"member {name!r}: absolute path")
    if len(name) >= 2 and name[1] == ":":
        raise ArchiveRefusedError(f"member {name!r}: drive-qualified path")
    if any(part == ".." for part in path.parts):
        raise ArchiveRefusedError(f"member {name!r}: '..' leaves the workspace")
    if not path.parts or path.parts == (".",):
        raise ArchiveRefusedError(f"member {name!r}: empty path")
    if any(len(part.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES for part in path.parts):
        raise ArchiveRefusedError(
            f"member {name[:80]!r}: a name longer than {_MAX_NAME_BYTES} bytes"
        )
    return path


def _member_kind(info: zipfile.ZipInfo) -> str:
    """'dir', 'file', or the name of a refused kind, from the zip's Unix mode bits."""
    mode = info.external_attr >> 16
    if info.is_dir():
        return "dir"
    kind = stat.S_IFMT(mode)
    if kind in (0, stat.S_IFREG):
        return "file"
    if kind == stat.S_IFLNK:
        return "symlink"
    if kind == stat.S_IFDIR:
        return "dir"
    return "device, FIFO or socket"


def _check_members(
    archive: zipfile.ZipFile, limits: UnpackLimits
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise ArchiveRefusedError(f"{len(infos)} members, over the limit of {limits.max_members}")
    seen: set[PurePosixPath] = set()
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    checked = []
    total = 0
    for info in infos:
        path = check_member_name(info.filename)
        kind = _member_kind(info)
        if kind not in ("dir", "file"):
            raise ArchiveRefusedError(f"member {info.filename!r}: a {kind} is not allowed")
        if info.flag_bits & 0x1:
            raise ArchiveRefusedError(f"member {info.filename!r}: encrypted")
        if path in seen:
            raise ArchiveRefusedError(f"member {info.filename!r}: appears twice")
        seen.add(path)
        folders.update(path.parents)
        (folders if kind == "dir" else files).add(path)
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ArchiveRefusedError(
                f"unpacks to more than {limits.max_total_bytes} bytes (the limit)"
            )
        if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(
            info.compress_size, 1
        ):
            raise ArchiveRefusedError(
                f"member {info.filename!r}: compressed {info.compress_size} bytes unpack to "
                f"{info.file_size} (ratio over {limits.max_ratio:g}: a zip bomb?)"
            )
        checked.append((info, path))
    clash = files & folders
    if clash:
        raise ArchiveRefusedError(f"member {str(min(clash))!r} is both a file and a folder")
    return checked


def _extract(
    archive: zipfile.ZipFile,
    members: list[tuple[zipfile.ZipInfo, PurePosixPath]],
    root: Path,
    limits: UnpackLimits,
) -> None:
    written = 0
    for info, path in members:
        target = root.joinpath(*path.parts)
        if _member_kind(info) == "dir":
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        executable = bool((info.external_attr >> 16) & 0o100)
        # O_EXCL|O_NOFOLLOW: never through a link, never over something already there
        fd = os.open(
            target,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
            0o755 if executable else 0o644,
        )
        with os.fdopen(fd, "wb") as out, archive.open(info) as source:
            while block := source.read(_COPY_BLOCK):
                written += len(block)
                if written > limits.max_total_bytes:
                    raise ArchiveRefusedError(
                        f"unpacks to more than {limits.max_total_bytes} bytes (the limit)"
                    )
                out.write(block)


def unpack_archive(
    archive_path: Path, destination: Path, limits: UnpackLimits = UnpackLimits()
) -> Path:
    """Unpack the zip at ``archive_path`` into the new folder ``destination``.

    ``destination`` must not exist yet. Raises ArchiveRefusedError (with the reason) for an
    archive that is not a zip, is corrupt, or has an unsafe member; OSError for local file
    problems. On any error nothing is left at ``destination`` or beside it.
    """
    if destination.exists() or destination.is_symlink():
        raise FileExistsError(f"{destination} already exists")
    temporary = Path(
        tempfile.mkdtemp(prefix=f".{destination.name}.unpacking-", dir=destination.parent)
    )
    try:
        try:
            with zipfile.ZipFile(archive_path) as archive:
                members = _check_members(archive, limits)
                _extract(archive, members, temporary, limits)
        except zipfile.BadZipFile as exc:
            raise ArchiveRefusedError(f"not a valid zip archive: {exc}") from exc
        except (NotImplementedError, RuntimeError, EOFError, ValueError, zlib.error) as exc:
            # unsupported compression, undecodable names (UnicodeDecodeError is a ValueError)
            raise ArchiveRefusedError(f"cannot unpack it: {exc}") from exc
        temporary.chmod(0o755)
        os.rename(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return destination

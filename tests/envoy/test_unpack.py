"""Unpacking an untrusted experiment archive: what lands where, and what is refused."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardclient._envoy.unpack import (
    ArchiveRefusedError,
    UnpackLimits,
    check_member_name,
    unpack_archive,
)


def _zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return path


def _info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_unpacks_files_folders_and_the_executable_bit(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [
        ("plan/plan.yaml", b"rounds: 3\n"),
        (_info("run.sh", stat.S_IFREG | 0o755), b"#!/bin/sh\n"),
        (_info("data/", stat.S_IFDIR | 0o755), b""),
        ("model.py", b"x = 1\n"),
    ])  # fmt: skip
    workspace = unpack_archive(archive, tmp_path / "ws")
    assert (workspace / "plan" / "plan.yaml").read_text() == "rounds: 3\n"
    assert (workspace / "data").is_dir()
    assert (workspace / "run.sh").stat().st_mode & 0o100
    assert not (workspace / "model.py").stat().st_mode & 0o111
    assert _leftovers(tmp_path) == ["a.zip", "ws"]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("/etc/passwd", "absolute path"),
        ("../outside.txt", "'..' leaves the workspace"),
        ("plan/../../outside.txt", "'..' leaves the workspace"),
        ("dir\\..\\evil.txt", "not a safe file name"),
        ("C:/windows.txt", "drive-qualified"),
        (_info("link", stat.S_IFLNK | 0o777), "a symlink is not allowed"),
        (_info("tty", stat.S_IFCHR | 0o666), "device, FIFO or socket"),
        (_info("pipe", stat.S_IFIFO | 0o666), "device, FIFO or socket"),
    ],
)
def test_unsafe_members_are_refused_and_nothing_is_left(
    tmp_path: Path, member: zipfile.ZipInfo | str, reason: str
) -> None:
    archive = _zip(tmp_path / "a.zip", [("fine.txt", b"ok"), (member, b"/etc/passwd")])
    with pytest.raises(ArchiveRefusedError, match=reason):
        unpack_archive(archive, tmp_path / "ws")
    assert _leftovers(tmp_path) == ["a.zip"]


def test_duplicate_and_clashing_members_are_refused(tmp_path: Path) -> None:
    duplicate = tmp_path / "dup.zip"
    with zipfile.ZipFile(duplicate, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("a.txt", b"1")
        archive.writestr("a.txt", b"2")
    with pytest.raises(ArchiveRefusedError, match="appears twice"):
        unpack_archive(duplicate, tmp_path / "ws")
    clash = _zip(tmp_path / "clash.zip", [("a", b"file"), ("a/b.txt", b"inside a file?")])
    with pytest.raises(ArchiveRefusedError, match="both a file and a folder"):
        unpack_archive(clash, tmp_path / "ws")
    assert _leftovers(tmp_path) == ["clash.zip", "dup.zip"]


def test_zip_bombs_are_refused_by_ratio_size_and_count(tmp_path: Path) -> None:
    bomb = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(8 * 1024 * 1024))])
    with pytest.raises(ArchiveRefusedError, match="zip bomb"):
        unpack_archive(bomb, tmp_path / "ws")
    big = _zip(tmp_path / "big.zip", [("a.bin", b"x" * 1000), ("b.bin", b"y" * 1000)])
    with pytest.raises(ArchiveRefusedError, match="more than 1500 bytes"):
        unpack_archive(big, tmp_path / "ws", UnpackLimits(max_total_bytes=1500))
    many = _zip(tmp_path / "many.zip", [(f"{i}.txt", b"") for i in range(11)])
    with pytest.raises(ArchiveRefusedError, match="11 members"):
        unpack_archive(many, tmp_path / "ws", UnpackLimits(max_members=10))
    assert _leftovers(tmp_path) == ["big.zip", "bomb.zip", "many.zip"]


def test_a_member_that_lies_about_its_size_is_refused(tmp_path: Path) -> None:
    """Its declared size passes the limit; the bytes do not match it, and nothing stays."""
    archive = tmp_path / "liar.zip"
    _zip(archive, [("a.bin", b"x" * 4000)])
    data = bytearray(archive.read_bytes())
    # shrink the uncompressed size in the central directory entry (offset 24 of it)
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveRefusedError):
        unpack_archive(archive, tmp_path / "ws", UnpackLimits(max_total_bytes=1000))
    assert _leftovers(tmp_path) == ["liar.zip"]


def test_not_a_zip_and_a_corrupt_zip_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(ArchiveRefusedError, match="not a valid zip"):
        unpack_archive(garbage, tmp_path / "ws")
    corrupt = _zip(tmp_path / "corrupt.zip", [("a.txt", b"hello world " * 100)])
    data = bytearray(corrupt.read_bytes())
    data[40:60] = bytes(20)  # inside the compressed data of the only member
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ArchiveRefusedError):
        unpack_archive(corrupt, tmp_path / "ws")
    assert _leftovers(tmp_path) == ["corrupt.zip", "garbage.zip"]


def test_encrypted_members_are_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "enc.zip", [("secret.txt", b"data")])
    data = bytearray(archive.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        data[at + flag_offset] |= 0x1
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveRefusedError, match="encrypted"):
        unpack_archive(archive, tmp_path / "ws")


def test_an_existing_destination_is_never_overwritten(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("a.txt", b"new")])
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "a.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        unpack_archive(archive, tmp_path / "ws")
    assert (tmp_path / "ws" / "a.txt").read_text() == "mine"


@given(st.text(min_size=1, max_size=40))
def test_member_names_either_stay_inside_or_are_refused(name: str) -> None:
    try:
        path = check_member_name(name)
    except ArchiveRefusedError:
        return
    assert not path.is_absolute()
    assert ".." not in path.parts
    resolved = PurePosixPath("/ws").joinpath(path)
    assert resolved.parts[:2] == ("/", "ws") and len(resolved.parts) > 2


def test_names_the_file_system_cannot_hold_are_refused(tmp_path: Path) -> None:
    long_name = _zip(tmp_path / "long.zip", [("d/" + "n" * 300 + ".txt", b"x")])
    with pytest.raises(ArchiveRefusedError, match="longer than 255 bytes"):
        unpack_archive(long_name, tmp_path / "ws")
    undecodable = tmp_path / "utf8.zip"
    _zip(undecodable, [("plain.txt", b"x")])
    data = bytearray(undecodable.read_bytes())
    for signature, flag_offset, name_offset in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        at = data.find(signature)
        data[at + flag_offset + 1] |= 0x08  # bit 11: the name is UTF-8...
        data[at + name_offset] = 0xFF  # ...and it is not
    undecodable.write_bytes(bytes(data))
    with pytest.raises(ArchiveRefusedError):
        unpack_archive(undecodable, tmp_path / "ws")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.zip", "utf8.zip"]

"""Text from the director made safe: archive file names are never paths, terminal text\nis one printable line."""

from __future__ import annotations

import pytest

from shardclient import (
    archive_filename,
)
from shardclient._text import printable


@pytest.mark.parametrize(
    "name",
    ["../x", "/etc/passwd", "a/b", "nul\x00byte", "x" * 5000, ".hidden", "..", "", "ok name"],
)
def test_archive_filename_is_never_a_path(name: str) -> None:
    filename = archive_filename(name)
    assert "/" not in filename and "\x00" not in filename and "\\" not in filename
    assert not filename.startswith(".")
    assert filename.endswith(".zip") and len(filename) <= 120


def test_archive_filename_keeps_plain_names_and_separates_sanitized_ones() -> None:
    assert archive_filename("mnist_v2-run.3") == "mnist_v2-run.3.zip"
    assert archive_filename("a/b") != archive_filename("a_b")
    assert archive_filename("a/b") != archive_filename("a\\b")


def test_printable_cuts_long_values() -> None:
    assert printable("x" * 500, 20) == "x" * 17 + "..."
    assert printable(["a", 1]) == "['a', 1]"

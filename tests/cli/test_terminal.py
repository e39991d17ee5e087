"""The review prompt: asked only on a terminal, and a yes is all that approves."""

from __future__ import annotations

import io
import os
from pathlib import Path

from shardclient._cli.terminal import ask_on_terminal


def test_no_terminal_means_nobody_to_ask() -> None:
    out = io.StringIO()
    assert ask_on_terminal("Run it?", stdin=io.StringIO("y\n"), stdout=out) is None
    assert out.getvalue() == ""  # nothing shown when nobody can answer


def test_a_terminal_answer_is_read(tmp_path: Path) -> None:
    for typed, expected in ((b"y\n", True), (b"YES\n", True), (b"n\n", False), (b"\n", False),
                            (b"", False)):  # fmt: skip
        primary, secondary = os.openpty()
        try:
            os.write(primary, typed)
            if not typed:
                os.write(primary, b"\x04")  # end of input on a terminal
            with open(secondary, closefd=False) as tty:
                out = io.StringIO()
                assert ask_on_terminal("Run it?", stdin=tty, stdout=out) is expected, typed
            assert out.getvalue().startswith("Run it? [y/N] ")
        finally:
            os.close(primary)
            os.close(secondary)

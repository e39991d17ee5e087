"""Running an experiment's program: it ends when the process exits, its group is stopped,
and its output reaches the log and the failure tail without ever blocking the loop."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import anyio
import pytest

from shardclient._envoy.process import TAIL_CHARS, read_tail, run_in_group

pytestmark = pytest.mark.anyio


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def _run(tmp_path: Path, script: str, **kwargs: float) -> tuple[int, str]:
    result = await run_in_group(
        [sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ),
        log_path=tmp_path / "out.log", label="exp", **kwargs,
    )  # fmt: skip
    return result.exit_code, result.tail


async def test_exit_code_and_output_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = (
        "import sys; print('to stdout'); sys.stderr.write('x' * 5000 + '\\nboom\\n'); sys.exit(3)"
    )
    with caplog.at_level(logging.INFO, logger="shardclient.envoy"):
        code, tail = await _run(tmp_path, script)
    assert code == 3
    assert tail.endswith("boom\n") and len(tail) == TAIL_CHARS
    assert "to stdout" in (tmp_path / "out.log").read_text()  # both streams, one file
    assert "exp: to stdout" in caplog.text and "exp: boom" in caplog.text  # mirrored


async def test_a_leftover_background_process_neither_stalls_nor_survives(tmp_path: Path) -> None:
    """The program exits at once but leaves a child holding its output open: the run ends
    with the program, and the leftover is stopped with the group."""
    pid_file = tmp_path / "pid"
    script = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))"
    )
    with anyio.fail_after(30):
        code, _ = await _run(tmp_path, script)
    assert code == 0
    assert not _alive(int(pid_file.read_text()))


async def test_a_leftover_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    script = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(0.5); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))"
    )
    with anyio.fail_after(30):
        code, _ = await _run(tmp_path, script, grace=0.5)
    assert code == 0
    assert not _alive(int(pid_file.read_text()))


async def test_cancellation_stops_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{p.pid}}'); time.sleep(300)"
    )
    with anyio.move_on_after(30) as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(_run, tmp_path, script)
            while not (pid_file.exists() and len(pid_file.read_text().split()) == 2):
                await anyio.sleep(0.05)
            group.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert not any(_alive(int(pid)) for pid in pid_file.read_text().split())


async def test_a_flood_of_output_is_skipped_in_the_log_not_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = "import sys\nfor _ in range(20000): sys.stdout.write('y' * 200 + '\\n')\nsys.exit(1)"
    with caplog.at_level(logging.INFO, logger="shardclient.envoy"):
        code, _ = await _run(tmp_path, script)
    assert code == 1
    assert (tmp_path / "out.log").stat().st_size == 20000 * 201  # the file has all of it
    mirrored = [r for r in caplog.records if r.getMessage().startswith("exp: yyy")]
    assert len(mirrored) < 20000
    assert "bytes of output skipped" in caplog.text


async def test_a_program_that_cannot_start_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        await run_in_group(
            [str(tmp_path / "missing")], cwd=tmp_path, env={}, log_path=tmp_path / "o.log",
            label="x",
        )  # fmt: skip


def test_read_tail_of_broken_utf8_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"\xff\xfe partial \xe2\x82 end")
    assert read_tail(path, 8) == "al \ufffd end"
    assert read_tail(tmp_path / "absent") == ""


async def test_a_shared_log_yields_only_this_program_s_output(tmp_path: Path) -> None:
    (tmp_path / "out.log").write_text("an earlier program's traceback\n")
    code, tail = await _run(tmp_path, "import sys; sys.exit(2)")
    assert code == 2 and tail == ""  # not the earlier program's output

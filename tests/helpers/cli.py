"""Running the shardclient command as a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

COMMAND = [sys.executable, "-m", "shardclient"]
LIMIT = 60  # seconds any one command may take


def run_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``shardclient ARGS``, its output captured, stdin closed, within LIMIT."""
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def one_error_line(stderr: str) -> str:
    """The one 'shardclient: error:' line an error ends in (and no traceback)."""
    lines = [line for line in stderr.splitlines() if line.startswith("shardclient: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    """Poll ``condition`` while ``process`` runs, for up to LIMIT seconds."""
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.01)  # polling for a file to appear, not asserting on timing

"""What /proc says about processes: whether one is gone, and which run below another."""

from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields after the command name in /proc/<pid>/stat (None: no such process)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie only waits for its parent's reaping)."""
    fields = _stat(pid)
    return fields is None or fields[0] in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """The living processes below ``pid``: children, grandchildren, ..."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X"):
                parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found

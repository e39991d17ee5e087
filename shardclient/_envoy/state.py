"""The experiments an envoy has handled, kept in a small state file in its work directory.

OpenFL's director keeps offering an experiment to an envoy that already has it (while it
runs, and for good after it failed), so the envoy must remember what it handled, across its
own restarts too. The file is JSON, rewritten atomically (temporary file, fsync, rename) on
every change; a file that cannot be read or makes no sense is an error naming it, never a
silent reset.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final

from shardclient._errors import EnvoyStateError
from shardclient._fs import fsync_directory

__all__ = ["HandledExperiment", "HandledExperiments", "Outcome", "STATE_FILE"]

STATE_FILE: Final = ".shardclient-envoy-state.json"
_FORMAT: Final = 1
_MAX_ENTRIES: Final = 10_000  # oldest forgotten beyond this
_MAX_FILE_BYTES: Final = 16 * 1024 * 1024


class Outcome(str, Enum):
    """How an experiment ended here."""

    RUNNING = "running"  # started; if the envoy finds this at start, it was interrupted
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"  # not approved, or refused before anything ran
    DOWNLOADED = "downloaded"  # --download-only kept the archive
    LOST = "lost"  # its director restarted meanwhile and forgot it: let go, not reported


@dataclass(frozen=True)
class HandledExperiment:
    name: str
    outcome: Outcome
    detail: str
    at: float


class HandledExperiments:
    """The state file of one envoy's work directory (one envoy per work directory)."""

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / STATE_FILE
        self._entries: dict[str, HandledExperiment] = {}
        self._load()

    def _load(self) -> None:
        try:
            if self.path.stat().st_size > _MAX_FILE_BYTES:
                raise EnvoyStateError(f"{self.path}: larger than {_MAX_FILE_BYTES} bytes")
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise EnvoyStateError(f"{self.path}: cannot read it: {exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise EnvoyStateError(
                f"{self.path}: not valid JSON ({exc}); move it away to start afresh"
            ) from None
        self._entries = _parse(self.path, data)

    def get(self, name: str) -> HandledExperiment | None:
        return self._entries.get(name)

    def all(self) -> list[HandledExperiment]:
        return sorted(self._entries.values(), key=lambda entry: entry.at)

    def record(self, name: str, outcome: Outcome, detail: str = "") -> None:
        """Remember ``name`` with its outcome (replacing an earlier entry) and save."""
        self._entries.pop(name, None)
        self._entries[name] = HandledExperiment(name, outcome, detail[:2000], time.time())
        while len(self._entries) > _MAX_ENTRIES:
            del self._entries[min(self._entries.values(), key=lambda e: e.at).name]
        self._save()

    def forget(self, name: str) -> bool:
        """Forget ``name`` (so it may run again); True when it was known."""
        if self._entries.pop(name, None) is None:
            return False
        self._save()
        return True

    def _save(self) -> None:
        data = {
            "format": _FORMAT,
            "experiments": [
                {"name": e.name, "outcome": e.outcome.value, "detail": e.detail, "at": e.at}
                for e in self.all()
            ],
        }
        text = json.dumps(data, indent=1, ensure_ascii=True)
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write(text)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self.path)
                fsync_directory(self.path.parent)  # the rename survives a power loss
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:
            raise EnvoyStateError(f"{self.path}: cannot write it: {exc}") from exc


def _parse(path: Path, data: object) -> dict[str, HandledExperiment]:
    def bad(problem: str) -> EnvoyStateError:
        return EnvoyStateError(f"{path}: {problem}; move it away to start afresh")

    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise bad(f"not a shardclient state file of format {_FORMAT}")
    items = data.get("experiments")
    if not isinstance(items, list):
        raise bad("'experiments' is not a list")
    entries: dict[str, HandledExperiment] = {}
    for index, item in enumerate(items):
        where = f"experiments[{index}]"
        if not isinstance(item, dict):
            raise bad(f"{where} is not an object")
        name, outcome, detail, at = (item.get(k) for k in ("name", "outcome", "detail", "at"))
        if not isinstance(name, str):
            raise bad(f"{where}.name is not a string")
        try:
            parsed = Outcome(outcome)
        except ValueError:
            raise bad(f"{where}.outcome {str(outcome)[:40]!r} is unknown") from None
        if not isinstance(detail, str):
            raise bad(f"{where}.detail is not a string")
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise bad(f"{where}.at is not a number")
        entries[name] = HandledExperiment(name, parsed, detail, float(at))
    return entries

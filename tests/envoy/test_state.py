"""The envoy's memory of handled experiments: kept across restarts, never silently reset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shardclient._envoy.state import STATE_FILE, HandledExperiments, Outcome
from shardclient._errors import EnvoyStateError


def test_outcomes_survive_a_restart_and_can_be_forgotten(tmp_path: Path) -> None:
    first = HandledExperiments(tmp_path)
    first.record("a", Outcome.RUNNING)
    first.record("a", Outcome.FAILED, "the collaborator exited with 1")
    first.record("b", Outcome.SUCCEEDED)
    again = HandledExperiments(tmp_path)
    entry = again.get("a")
    assert entry is not None and entry.outcome is Outcome.FAILED
    assert entry.detail == "the collaborator exited with 1"
    assert [e.name for e in again.all()] == ["a", "b"]
    assert again.forget("a") and not again.forget("a")
    assert HandledExperiments(tmp_path).get("a") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # no temporary left


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": 2, "experiments": []}', "not a shardclient state file"),
        ('{"format": 1, "experiments": {}}', "'experiments' is not a list"),
        ('{"format": 1, "experiments": [{"name": 1}]}', r"experiments\[0\].name"),
        (
            '{"format": 1, "experiments": [{"name": "a", "outcome": "won", "detail": "", "at": 1}]}',
            "outcome 'won' is unknown",
        ),
        (b"\xff\xfe", "cannot read it"),
    ],
)
def test_a_corrupt_state_file_is_an_error_naming_it(
    tmp_path: Path, content: str | bytes, problem: str
) -> None:
    path = tmp_path / STATE_FILE
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(EnvoyStateError, match=problem) as caught:
        HandledExperiments(tmp_path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_an_unwritable_work_directory_is_an_error_naming_the_file(tmp_path: Path) -> None:
    handled = HandledExperiments(tmp_path / "gone")  # the folder does not exist
    with pytest.raises(EnvoyStateError, match="cannot write it"):
        handled.record("a", Outcome.SUCCEEDED)


def test_the_file_is_plain_json(tmp_path: Path) -> None:
    HandledExperiments(tmp_path).record("exp\u00e9", Outcome.REFUSED, "declined")
    data = json.loads((tmp_path / STATE_FILE).read_text())
    assert data["format"] == 1
    assert data["experiments"][0]["name"] == "exp\u00e9"
    assert data["experiments"][0]["outcome"] == "refused"

"""What a data owner reviews before an experiment runs on its shard.

The summary comes from the unpacked workspace only (plan/plan.yaml, requirements.txt, the
file list), read as untrusted text: nothing in it is executed or unpickled, every value is
made printable before it reaches a terminal (no escape sequences), and long lists are cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shardclient._config.bounded_yaml import MAX_YAML_BYTES, load_yaml
from shardclient._text import printable

__all__ = ["ExperimentSummary", "NO_TERMINAL", "read_requirements", "summarize_workspace"]

NO_TERMINAL = "no terminal to ask on"
_MAX_SHOWN = 12  # list items shown before "... and N more"


def _listing(items: list[str]) -> str:
    shown = ", ".join(printable(item, 80) for item in items[:_MAX_SHOWN])
    more = len(items) - _MAX_SHOWN
    return f"{shown}, ... and {more} more" if more > 0 else shown


@dataclass(frozen=True)
class ExperimentSummary:
    """What the plan says an experiment will do here; the text values are already printable."""

    name: str
    rounds: str = "not stated"
    aggregator: str = "not stated"
    tasks: list[str] = field(default_factory=list)
    framework_adapter: str = "not stated"
    flow: str | None = None
    """An OpenFL 1.9 flow: its class and settings (1.5-1.7 plans have tasks instead)."""
    requirements: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def render(self, *, shard_name: str, install_requirements: bool) -> str:
        install = (
            "installed into an environment of this experiment's own"
            if install_requirements
            else "not installed (install_requirements is off)"
        )
        lines = [
            f"Experiment {printable(self.name)} asks to train on shard {printable(shard_name)}:",
            f"  aggregator     {self.aggregator}",
            f"  rounds         {self.rounds}",
        ]
        if self.flow is not None:
            lines.append(f"  flow           {self.flow}")
        else:
            lines.append(f"  tasks          {_listing(self.tasks) or 'not stated'}")
            lines.append(f"  model adapter  {self.framework_adapter}")
        lines += [
            f"  files          {_listing(self.files) or 'none'}",
            f"  requirements   {len(self.requirements)}, {install}"
            + (f": {_listing(self.requirements)}" if self.requirements else ""),
        ]
        lines += [f"  note           {problem}" for problem in self.problems]
        return "\n".join(lines)


def _read_bounded(path: Path, limit: int) -> str:
    """A text file of at most ``limit`` bytes (ValueError when larger): archives are
    untrusted and may carry gigabytes under a harmless name."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.name} is larger than {limit} bytes")
    return data.decode("utf-8", errors="replace")


def read_requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements.txt (comments and blanks left out); a file
    that cannot be read counts as one line saying so."""
    try:
        text = _read_bounded(path, MAX_YAML_BYTES)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        return [f"(requirements.txt cannot be read: {exc})"]
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _section(data: Mapping[str, object], *keys: str) -> object:
    value: object = data
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _plan_tasks(plan: Mapping[str, object]) -> list[str]:
    names: dict[str, None] = {}  # ordered, without repeats
    groups = _section(plan, "assigner", "settings", "task_groups")
    if isinstance(groups, list):
        for group in groups:
            tasks = group.get("tasks") if isinstance(group, Mapping) else None
            if isinstance(tasks, list):
                names.update(dict.fromkeys(str(task) for task in tasks))
    tasks_section = plan.get("tasks")
    if isinstance(tasks_section, Mapping):
        names.update(
            dict.fromkeys(str(k) for k in tasks_section if k not in ("settings", "defaults"))
        )
    return list(names)


def _flow(plan: Mapping[str, object]) -> str | None:
    """An OpenFL 1.9 plan's flow: 'src.module.FlowClass (rounds=2, ...)'; None without one."""
    template = _section(plan, "federated_flow", "template")
    if template is None:
        return None
    settings = _section(plan, "federated_flow", "settings")
    shown = ""
    if isinstance(settings, Mapping) and settings:
        shown = " (" + ", ".join(f"{key}={value!r}" for key, value in settings.items()) + ")"
    return printable(f"{template}{shown}")


def summarize_workspace(workspace: Path, name: str) -> ExperimentSummary:
    """Read what a reviewer needs from an unpacked workspace (never fails: problems are
    listed in the summary)."""
    problems: list[str] = []
    files = sorted(
        str(path.relative_to(workspace)) + ("/" if path.is_dir() else "")
        for path in workspace.iterdir()
    )
    requirements = read_requirements(workspace / "requirements.txt")
    plan_path = workspace / "plan" / "plan.yaml"
    plan: Mapping[str, object] = {}
    try:
        loaded = load_yaml(_read_bounded(plan_path, MAX_YAML_BYTES))
        if isinstance(loaded, Mapping):
            plan = loaded
        else:
            problems.append("plan/plan.yaml is not a mapping")
    except FileNotFoundError:
        problems.append("the archive has no plan/plan.yaml")
    except (OSError, ValueError) as exc:  # YamlError is a ValueError
        problems.append(f"plan/plan.yaml cannot be read: {printable(str(exc))}")

    host = _section(plan, "network", "settings", "agg_addr")
    port = _section(plan, "network", "settings", "agg_port")
    tls = _section(plan, "network", "settings", "tls")
    aggregator = "not stated"
    if host is not None:
        aggregator = printable(f"{host}:{port}") + (
            " (TLS on)" if tls is True else " (TLS off)" if tls is False else ""
        )
    rounds = _section(plan, "aggregator", "settings", "rounds_to_train")
    adapter = _section(plan, "task_runner", "required_plugin_components", "framework_adapters")
    return ExperimentSummary(
        flow=_flow(plan),
        name=name,
        rounds=printable(rounds) if rounds is not None else "not stated",
        aggregator=aggregator,
        tasks=_plan_tasks(plan),
        framework_adapter=printable(adapter) if adapter is not None else "not stated",
        requirements=requirements,
        files=files,
        problems=problems,
    )

"""What a data owner is shown before an experiment runs."""

from __future__ import annotations

from pathlib import Path

from shardclient._envoy.review import summarize_workspace

PLAN = """\
aggregator:
  settings:
    rounds_to_train: 3
assigner:
  settings:
    task_groups:
    - name: train_and_validate
      tasks: [aggregated_model_validation, train, locally_tuned_model_validation]
network:
  settings:
    agg_addr: director.example
    agg_port: 50062
    tls: true
task_runner:
  required_plugin_components:
    framework_adapters: np_adapter.NumpyAdapter
"""


def _workspace(tmp_path: Path, plan: str | None = PLAN, requirements: str = "") -> Path:
    workspace = tmp_path / "ws"
    (workspace / "plan").mkdir(parents=True)
    if plan is not None:
        (workspace / "plan" / "plan.yaml").write_text(plan)
    (workspace / "requirements.txt").write_text(requirements)
    (workspace / "model.py").write_text("")
    return workspace


def test_summary_shows_aggregator_rounds_tasks_adapter_and_requirements(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path, requirements="# frozen\nnumpy==2.0.2\n\nopenfl==1.6  # pin\n")
    summary = summarize_workspace(workspace, "exp-1")
    text = summary.render(shard_name="hospital-a", install_requirements=False)
    assert "Experiment exp-1 asks to train on shard hospital-a" in text
    assert "director.example:50062 (TLS on)" in text
    assert "rounds         3" in text
    assert "aggregated_model_validation, train, locally_tuned_model_validation" in text
    assert "np_adapter.NumpyAdapter" in text
    assert (
        "requirements   2, not installed (install_requirements is off): numpy==2.0.2, openfl==1.6"
        in text
    )
    assert "model.py" in text and "plan/" in text


def test_hostile_plan_values_cannot_drive_the_terminal(tmp_path: Path) -> None:
    plan = PLAN.replace("director.example", '"\\e[2J\\e[31mevil\\r\\nApproved: yes"')
    workspace = _workspace(tmp_path, plan=plan, requirements="pkg\x1b[1m==1\n" * 40)
    text = summarize_workspace(workspace, "exp\x1b]0;title\x07").render(
        shard_name="s", install_requirements=True
    )
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "\\x1b[2J" in text
    assert "... and 28 more" in text  # 40 requirements, 12 shown


def test_missing_or_broken_plan_is_a_note_not_an_error(tmp_path: Path) -> None:
    text = summarize_workspace(_workspace(tmp_path, plan=None), "e").render(
        shard_name="s", install_requirements=True
    )
    assert "the archive has no plan/plan.yaml" in text
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdef", "bcdefg")
    )
    (tmp_path / "ws" / "plan" / "plan.yaml").write_text(bomb)
    text = summarize_workspace(tmp_path / "ws", "e").render(
        shard_name="s", install_requirements=True
    )
    assert "plan/plan.yaml cannot be read: expands to more than" in text


WORKFLOW_PLAN = """\
aggregator:
  settings:
    rounds_to_train: 1
federated_flow:
  settings:
    checkpoint: true
    rounds: 2
  template: src.numpy_fedavg.NumpyFedAvgFlow
network:
  settings:
    agg_addr: director.example
    agg_port: 51079
    tls: false
"""


def test_an_openfl_1_9_plan_shows_its_flow_and_settings(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path, plan=WORKFLOW_PLAN)
    text = summarize_workspace(workspace, "NumpyFedAvgFlow").render(
        shard_name="Portland", install_requirements=True
    )
    assert "flow           src.numpy_fedavg.NumpyFedAvgFlow (checkpoint=True, rounds=2)" in text
    assert "director.example:51079 (TLS off)" in text
    assert "tasks" not in text and "model adapter" not in text

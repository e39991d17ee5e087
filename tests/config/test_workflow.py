"""OpenFL 1.9 envoy configs: read as fx envoy start reads them, every problem named by file
and key; and telling the two generations' configs apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardclient import EnvoyConfigError
from shardclient._config import config_generation
from shardclient._config.workflow import load_workflow_config
from shardclient._generation import Generation
from tests.helpers.paths import FIXTURES

SETTINGS = "settings:\n  director_host: localhost\n  director_port: 50051\n"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "envoy_config.yaml"
    path.write_text(text)
    return path


def test_private_attributes_as_a_dict(tmp_path: Path) -> None:
    path = _config(tmp_path, SETTINGS + "Portland:\n  private_attributes: shard_data.attrs\n")
    config = load_workflow_config(path, "Portland")
    assert (config.director_host, config.director_port) == ("localhost", 50051)
    assert config.private_attributes == "shard_data.attrs" and config.callable_func is None
    assert config.install_requirements is True  # OpenFL's default, params or not
    assert config.review_experiment is False


def test_private_attributes_from_a_callable(tmp_path: Path) -> None:
    text = SETTINGS + (
        "params:\n  install_requirements: false\n  review_experiment: true\n"
        "Seattle:\n  callable_func:\n    template: shard_data.make\n"
        "    settings:\n      seed: 2\n      n: 300\n"
    )
    config = load_workflow_config(_config(tmp_path, text), "Seattle")
    assert config.callable_func == "shard_data.make"
    assert dict(config.callable_settings) == {"seed": 2, "n": 300}
    assert not config.install_requirements and config.review_experiment


def test_an_envoy_without_a_section_has_no_private_attributes(tmp_path: Path) -> None:
    config = load_workflow_config(_config(tmp_path, SETTINGS), "Lisbon")
    assert config.private_attributes is None and config.callable_func is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "settings:\n  director_host: localhost\n  director_port: '50051'\n",
            "settings.director_port: expected a port in 1..65535, got '50051' (str)",
        ),
        (
            "settings:\n  director_host: [a]\n  director_port: 1\n",
            "settings.director_host: expected a host name, got ['a'] (list)",
        ),
        (
            SETTINGS + "Portland:\n  attributes: shard_data.attrs\n",
            "Portland: expected private_attributes or callable_func, found attributes",
        ),
        (
            SETTINGS + "Portland:\n  private_attributes: attrs\n",
            "Portland.private_attributes: expected 'module.Name', got 'attrs' (str)",
        ),
        (
            SETTINGS + "Portland:\n  callable_func:\n    settings: {}\n",
            "Portland.callable_func.template: expected 'module.Name', got None (NoneType)",
        ),
        (
            SETTINGS + "Portland:\n  callable_func:\n    template: a.b\n    settings: [1]\n",
            "Portland.callable_func.settings: expected a mapping, got [1] (list)",
        ),
        (SETTINGS + "params:\n  install_requirements: yes please\n", "params.install_requirements"),
    ],
)
def test_problems_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _config(tmp_path, text)
    with pytest.raises(EnvoyConfigError) as caught:
        load_workflow_config(path, "Portland")
    assert str(caught.value).startswith(f"{path}: {message}"), caught.value


def test_each_generation_s_config_is_told_apart(tmp_path: Path) -> None:
    workflow = _config(tmp_path, SETTINGS)
    assert config_generation(workflow) is Generation.WORKFLOW
    interactive = FIXTURES / "envoy_ints" / "envoy_config.yaml"
    assert config_generation(interactive) is Generation.INTERACTIVE
    neither = tmp_path / "neither.yaml"
    neither.write_text("params: {}\n")
    assert config_generation(neither) is None
    with pytest.raises(EnvoyConfigError, match="no such file"):
        config_generation(tmp_path / "missing.yaml")

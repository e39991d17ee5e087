"""Envoy configs in OpenFL's format: loading, importing the template beside it, every error."""

from __future__ import annotations

import re
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from shardclient._config.interactive import EnvoyConfig, load_envoy_config
from shardclient._descriptor import ShardDescriptor, StaticShardDescriptor
from shardclient._errors import EnvoyConfigError, ShardClientError
from shardclient.messages import CudaDeviceInfo
from tests.helpers.paths import FIXTURES


def copy_fixture(name: str, tmp_path: Path) -> Path:
    """A fixture folder copied out of the tree (imports write __pycache__); its config's path."""
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    return folder / "envoy_config.yaml"


def write_envoy(folder: Path, config: str, **modules: str) -> Path:
    """An envoy folder: envoy_config.yaml plus modules given as name=source."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    path = folder / "envoy_config.yaml"
    path.write_text(textwrap.dedent(config))
    return path


GOOD_MODULE = """
class Descriptor:
    def __init__(self, size: int = 1) -> None:
        self.sample_shape = [size]
        self.target_shape = [1]
        self.dataset_description = "ok"
"""


@pytest.fixture(autouse=True)
def interpreter_left_clean() -> Iterator[None]:
    """Every test: loading (or failing to load) leaves sys.path and sys.modules as they were."""
    path = list(sys.path)
    modules = set(sys.modules)
    yield
    assert sys.path == path
    leaked = {name for name in set(sys.modules) - modules if not name.startswith("shardclient")}
    assert not leaked & {"shard_descriptor", "helpers", "sdpkg", "sdpkg.descriptors", "good"}
    assert "broken" not in leaked


# --- the fixtures ----------------------------------------------------------------------------------


def test_openfl_config_with_int_shapes(tmp_path: Path) -> None:
    path = copy_fixture("envoy_ints", tmp_path)
    config = load_envoy_config(path)
    assert isinstance(config, EnvoyConfig)
    assert config.path == path
    assert config.cuda_devices == (0, 2)
    assert config.install_requirements is False
    assert config.review_experiment is True
    assert config.template == "shard_descriptor.LocalShardDescriptor"
    assert config.descriptor_params == {
        "data_path": "data",
        "sample_shape": [28, 28],
        "target_shape": [1],
        "size": 16,
    }
    assert type(config.descriptor).__name__ == "LocalShardDescriptor"
    assert isinstance(config.descriptor, ShardDescriptor)
    assert list(config.descriptor.sample_shape) == [28, 28]
    plugin = config.optional_plugin_components["cuda_device_monitor"]
    assert plugin["template"] == (
        "openfl.plugins.processing_units_monitor.pynvml_monitor.PynvmlCUDADeviceMonitor"
    )
    assert config.raw["site"] == {"region": "eu-west"}  # unknown keys are kept

    info = config.shard_info("s1")
    assert (info.sample_shape, info.target_shape) == (["28", "28"], ["1"])
    assert info.shard_description == "ints from data"
    assert info.n_samples == 0
    assert info.node_info.cuda_devices == [CudaDeviceInfo(index=0), CudaDeviceInfo(index=2)]


def test_openfl_config_with_string_shapes(tmp_path: Path) -> None:
    config = load_envoy_config(copy_fixture("envoy_strings", tmp_path))
    assert config.cuda_devices == ()
    assert config.install_requirements is True  # OpenFL's defaults
    assert config.review_experiment is False
    assert config.optional_plugin_components == {}
    info = config.shard_info("s2")
    assert (info.sample_shape, info.target_shape, info.n_samples) == (["28", "28"], ["1"], 50)
    assert info.shard_description == "strings, rank 1 of 2"


def test_template_in_a_package_beside_the_config(tmp_path: Path) -> None:
    config = load_envoy_config(copy_fixture("envoy_package", tmp_path))
    assert config.raw == {
        "shard_descriptor": {"template": "sdpkg.descriptors.PackagedShardDescriptor"}
    }
    assert config.descriptor_params == {}
    assert config.shard_info("p").sample_shape == ["3", "32", "32"]
    assert config.shard_info("p").target_shape == []


def test_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_fixture("envoy_ints", tmp_path)
    monkeypatch.chdir(tmp_path)
    config = load_envoy_config("envoy_ints/envoy_config.yaml")
    assert config.path == tmp_path / "envoy_ints" / "envoy_config.yaml"


def test_template_from_an_installed_package(tmp_path: Path) -> None:
    path = write_envoy(
        tmp_path,
        """
        shard_descriptor:
          template: shardclient.StaticShardDescriptor
          params: {sample_shape: [28, 28], target_shape: ['1'], n_samples: 9}
        """,
    )
    descriptor = load_envoy_config(path).descriptor
    assert descriptor == StaticShardDescriptor([28, 28], [1], n_samples=9)
    assert type(descriptor) is StaticShardDescriptor  # not re-imported: the cached class


# --- same module names in different folders ---------------------------------------------------------


def test_two_folders_with_the_same_module_names_each_get_their_own(tmp_path: Path) -> None:
    ints = load_envoy_config(copy_fixture("envoy_ints", tmp_path))
    strings = load_envoy_config(copy_fixture("envoy_strings", tmp_path))
    again = load_envoy_config(tmp_path / "envoy_ints" / "envoy_config.yaml")
    assert list(ints.descriptor.sample_shape) == [28, 28]
    assert list(strings.descriptor.sample_shape) == ["28", "28"]
    assert type(again.descriptor).__module__ == "shard_descriptor"
    assert list(again.descriptor.sample_shape) == [28, 28]


def test_sibling_helper_modules_are_not_shared(tmp_path: Path) -> None:
    descriptor_source = """
    import helpers

    class Descriptor:
        sample_shape = helpers.SHAPE
        target_shape = [1]
        dataset_description = helpers.__file__
    """
    config = """
    shard_descriptor:
      template: shard_descriptor.Descriptor
    """
    first = write_envoy(
        tmp_path / "a", config, shard_descriptor=descriptor_source, helpers="SHAPE = [1]"
    )
    second = write_envoy(
        tmp_path / "b", config, shard_descriptor=descriptor_source, helpers="SHAPE = [2]"
    )
    assert load_envoy_config(first).shard_info("a").sample_shape == ["1"]
    assert load_envoy_config(second).shard_info("b").sample_shape == ["2"]
    assert load_envoy_config(first).descriptor.dataset_description.startswith(str(tmp_path / "a"))


def test_a_cached_module_of_that_name_is_set_aside_and_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = ModuleType("shard_descriptor")
    monkeypatch.setitem(sys.modules, "shard_descriptor", cached)
    config = load_envoy_config(copy_fixture("envoy_ints", tmp_path))
    assert list(config.descriptor.sample_shape) == [28, 28]
    assert sys.modules["shard_descriptor"] is cached


def test_a_stdlib_name_beside_the_config_does_not_replace_the_cached_module(tmp_path: Path) -> None:
    module = """
    import json

    class Descriptor:
        sample_shape = json.loads("[28, 28]")
        target_shape = [1]
        dataset_description = ""
    """
    path = write_envoy(
        tmp_path,
        "shard_descriptor:\n  template: good.Descriptor\n",
        good=module,
        json="raise RuntimeError('the stray json.py was imported')\n",
    )
    assert load_envoy_config(path).shard_info("j").sample_shape == ["28", "28"]


# --- errors ------------------------------------------------------------------------------------------


def error_of(path: Path) -> str:
    with pytest.raises(EnvoyConfigError) as caught:
        load_envoy_config(path)
    assert isinstance(caught.value, ShardClientError)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "envoy_config.yaml") == "no such file"


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    assert error_of(tmp_path).startswith("cannot read it: ")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write_envoy(tmp_path, "shard_descriptor: [unclosed\n")
    message = error_of(path)
    assert message.startswith("invalid YAML: ")
    assert "line 2" in message


def test_empty_file(tmp_path: Path) -> None:
    path = write_envoy(tmp_path, "# nothing\n")
    assert error_of(path) == "empty document, expected a mapping with a shard_descriptor"


TEMPLATE = "shard_descriptor:\n  template: good.Descriptor\n"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("- 1\n- 2\n", "(top level): expected a mapping, got [1, 2] (list)"),
        ("params: {}\n", "shard_descriptor: missing, expected a mapping with a template"),
        (
            "shard_descriptr:\n  template: good.Descriptor\n",
            "shard_descriptor: missing, expected a mapping with a template "
            "(found 'shard_descriptr': a typo?)",
        ),
        (
            "shard_descriptor: good.Descriptor\n",
            "shard_descriptor: expected a mapping, got 'good.Descriptor' (str)",
        ),
        (
            "shard_descriptor:\n  params: {}\n",
            "shard_descriptor.template: missing, expected 'module.Class'",
        ),
        (
            "shard_descriptor:\n  template: 12\n",
            "shard_descriptor.template: expected 'module.Name', got 12 (int)",
        ),
        (
            "shard_descriptor:\n  template: Descriptor\n",
            "shard_descriptor.template: expected 'module.Name', got 'Descriptor' (str)",
        ),
        (
            "shard_descriptor:\n  template: my-module.Descriptor\n",
            "shard_descriptor.template: expected 'module.Name', got 'my-module.Descriptor' (str)",
        ),
        (
            TEMPLATE + "  params: [1]\n",
            "shard_descriptor.params: expected a mapping, got [1] (list)",
        ),
        (
            TEMPLATE + "  params: {1: 2}\n",
            "shard_descriptor.params: keys must be strings, got 1 (int)",
        ),
        (TEMPLATE + "params: [0]\n", "params: expected a mapping, got [0] (list)"),
        (
            TEMPLATE + "params:\n  cuda_devices: '0,2'\n",
            "params.cuda_devices: expected a list of CUDA indices, got '0,2' (str)",
        ),
        (
            TEMPLATE + "params:\n  cuda_devices: 0\n",
            "params.cuda_devices: expected a list of CUDA indices, got 0 (int)",
        ),
        (
            TEMPLATE + "params:\n  cuda_devices: [0, -1]\n",
            "params.cuda_devices[1]: expected a CUDA index (an integer >= 0), got -1 (int)",
        ),
        (
            TEMPLATE + "params:\n  cuda_devices: [true]\n",
            "params.cuda_devices[0]: expected a CUDA index (an integer >= 0), got True (bool)",
        ),
        (
            TEMPLATE + "params:\n  cuda_devices: [1.0]\n",
            "params.cuda_devices[0]: expected a CUDA index (an integer >= 0), got 1.0 (float)",
        ),
        (
            TEMPLATE + "params:\n  install_requirements: 'no'\n",
            "params.install_requirements: expected true or false, got 'no' (str)",
        ),
        (
            TEMPLATE + "params:\n  review_experiment: 1\n",
            "params.review_experiment: expected true or false, got 1 (int)",
        ),
        (
            TEMPLATE + "optional_plugin_components: [a]\n",
            "optional_plugin_components: expected a mapping, got ['a'] (list)",
        ),
        (
            TEMPLATE + "optional_plugin_components:\n  monitor:\n    settings: []\n",
            "optional_plugin_components.monitor.template: expected 'module.Name', got None "
            "(NoneType)",
        ),
    ],
)
def test_malformed_config(tmp_path: Path, config: str, message: str) -> None:
    path = write_envoy(tmp_path, config, good=GOOD_MODULE)
    assert error_of(path) == message


@pytest.mark.parametrize(
    ("template", "modules", "message"),
    [
        (
            "nope.Descriptor",
            {},
            "shard_descriptor.template: cannot import 'nope': ModuleNotFoundError: "
            "No module named 'nope'",
        ),
        (
            "broken.Descriptor",
            {"broken": "import not_installed_dependency\n"},
            "shard_descriptor.template: cannot import 'broken': ModuleNotFoundError: "
            "No module named 'not_installed_dependency'",
        ),
        (
            "broken.Descriptor",
            {"broken": "raise RuntimeError('no GPU here')\n"},
            "shard_descriptor.template: cannot import 'broken': RuntimeError: no GPU here",
        ),
        (
            "good.Missing",
            {"good": GOOD_MODULE},
            "shard_descriptor.template: module 'good' has no attribute 'Missing'",
        ),
        (
            "good.VALUE",
            {"good": "VALUE = 3\n"},
            "shard_descriptor.template: good.VALUE is not callable, got 3 (int)",
        ),
    ],
)
def test_unusable_template(
    tmp_path: Path, template: str, modules: dict[str, str], message: str
) -> None:
    path = write_envoy(tmp_path, f"shard_descriptor:\n  template: {template}\n", **modules)
    assert error_of(path) == message


def test_syntax_error_in_the_template_module(tmp_path: Path) -> None:
    path = write_envoy(tmp_path, "shard_descriptor:\n  template: broken.X\n", broken="def (:\n")
    assert error_of(path).startswith(
        "shard_descriptor.template: cannot import 'broken': SyntaxError"
    )


def test_constructor_rejecting_the_params(tmp_path: Path) -> None:
    path = write_envoy(
        tmp_path,
        "shard_descriptor:\n  template: good.Descriptor\n  params: {size: 2, colour: red}\n",
        good=GOOD_MODULE,
    )
    message = error_of(path)
    assert re.fullmatch(
        r"shard_descriptor\.params: good\.Descriptor\(\*\*params\) failed: TypeError: "
        r".*unexpected keyword argument 'colour'",
        message,
    ), message


def test_constructor_raising(tmp_path: Path) -> None:
    module = """
    class Descriptor:
        def __init__(self, data_path: str) -> None:
            raise FileNotFoundError(f"no data at {data_path}")
    """
    path = write_envoy(
        tmp_path,
        "shard_descriptor:\n  template: good.Descriptor\n  params: {data_path: /nowhere}\n",
        good=module,
    )
    assert error_of(path) == (
        "shard_descriptor.params: good.Descriptor(**params) failed: "
        "FileNotFoundError: no data at /nowhere"
    )


def test_not_a_shard_descriptor(tmp_path: Path) -> None:
    module = """
    class Descriptor:
        sample_shape = [1]
    """
    path = write_envoy(tmp_path, "shard_descriptor:\n  template: good.Descriptor\n", good=module)
    assert error_of(path) == (
        "shard_descriptor.template: good.Descriptor built a Descriptor, which is not a "
        "ShardDescriptor: it has no target_shape, dataset_description"
    )


def test_the_check_does_not_run_properties(tmp_path: Path) -> None:
    """An OpenFL-style descriptor whose properties raise until used is still accepted."""
    module = """
    class Descriptor:
        @property
        def sample_shape(self):
            raise NotImplementedError
        target_shape = sample_shape
        dataset_description = sample_shape
    """
    path = write_envoy(tmp_path, "shard_descriptor:\n  template: good.Descriptor\n", good=module)
    assert type(load_envoy_config(path).descriptor).__name__ == "Descriptor"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
            ),
            "expands to more than",
        ),  # a "billion laughs" of under 400 bytes
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
        ("params:\n  cuda_devices: [" + "9" * 5000 + "]\n", "a value cannot be read"),
        ("a: 1\n" + "#" * (2 * 1024 * 1024), "larger than"),
    ],
)
def test_hostile_yaml_is_refused_quickly_naming_the_file(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "envoy_config.yaml"
    path.write_text(text)
    with pytest.raises(EnvoyConfigError, match=problem) as caught:
        load_envoy_config(path)
    assert str(path) in str(caught.value) and len(str(caught.value)) < 500  # no repr of it

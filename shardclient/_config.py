"""OpenFL envoy config files (envoy_config.yaml): read, check, and build the shard descriptor.

The format is OpenFL's: ``params`` (cuda_devices, install_requirements, review_experiment),
``shard_descriptor`` (template 'module.Class' and params) and ``optional_plugin_components``.
Unknown keys are kept in ``EnvoyConfig.raw``: OpenFL configs carry extras.

Importing the template, as OpenFL does: the config file's folder is put first on sys.path, so
``template: shard_descriptor.LocalShardDescriptor`` finds the shard_descriptor.py beside the YAML.
Loading leaves the interpreter as it found it:

- sys.path is restored once the descriptor is built (so a descriptor that imports a sibling
  module lazily, after construction, will not find it);
- modules that the folder provides (a ``name.py`` or ``name/__init__.py`` there) are executed
  afresh for every load, even when a module of that name is already in sys.modules, and are
  taken out of sys.modules again afterwards, with whatever was cached under those names put back.
  So two configs in different folders that both use ``shard_descriptor.py`` (or a shared helper
  module name) each get their own code, and neither shadows anything for the rest of the program.
  The price: the descriptor's module is not reachable through sys.modules (pickling its class by
  reference would fail). Modules imported from elsewhere (installed packages) are cached as usual.

Loads are serialized by a lock; imports made meanwhile by other threads see the folder on sys.path.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import inspect
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final, SupportsIndex, cast

from shardclient._descriptor import ShardDescriptor, shard_info_from_descriptor
from shardclient._errors import EnvoyConfigError, describe_value
from shardclient._yaml import MAX_YAML_BYTES, YamlError, load_yaml
from shardclient.messages import CudaDeviceInfo, ShardInfo

__all__ = ["EnvoyConfig", "load_envoy_config"]

_PROTOCOL_MEMBERS: Final = ("sample_shape", "target_shape", "dataset_description")
_ABSENT: Final = object()
_LOAD_LOCK: Final = threading.Lock()


@dataclass(frozen=True)
class EnvoyConfig:
    """A checked envoy config and the shard descriptor it builds.

    Optional plugin components are checked (each needs a 'template') but not instantiated: they
    name openfl classes, which shardclient does not import.
    """

    path: Path
    cuda_devices: tuple[int, ...]
    install_requirements: bool
    review_experiment: bool
    descriptor: ShardDescriptor
    template: str
    descriptor_params: Mapping[str, object]
    optional_plugin_components: Mapping[str, Mapping[str, object]]
    raw: Mapping[str, object]

    def shard_info(self, shard_name: str) -> ShardInfo:
        """The ShardInfo this envoy registers with: its descriptor and its CUDA devices."""
        devices: tuple[SupportsIndex | CudaDeviceInfo, ...] = self.cuda_devices
        return shard_info_from_descriptor(
            self.descriptor, shard_name=shard_name, cuda_devices=devices
        )


class _Checker:
    """Reads typed values out of the parsed YAML; every failure names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, key: str, problem: str) -> EnvoyConfigError:
        return EnvoyConfigError(
            f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}"
        )

    def mapping(self, value: object, key: str) -> dict[str, object]:
        """A mapping with string keys (a copy); YAML null counts as empty."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {describe_value(value)}")
        for name in value:
            if not isinstance(name, str):
                raise self.error(key, f"keys must be strings, got {describe_value(name)}")
        return dict(value)

    def missing(self, key: str, expected: str, siblings: Mapping[str, object]) -> EnvoyConfigError:
        """A missing-key error, with a hint when a present key looks like a typo of it."""
        leaf = key.rpartition(".")[2]
        close = difflib.get_close_matches(leaf, list(siblings), n=1)
        hint = f" (found {close[0]!r}: a typo?)" if close else ""
        return self.error(key, f"missing, expected {expected}{hint}")

    def boolean(self, section: Mapping[str, object], key: str, prefix: str, default: bool) -> bool:
        value = section.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(
                f"{prefix}.{key}", f"expected true or false, got {describe_value(value)}"
            )
        return value

    def cuda_devices(self, section: Mapping[str, object]) -> tuple[int, ...]:
        value = section.get("cuda_devices")
        key = "params.cuda_devices"
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of CUDA indices, got {describe_value(value)}")
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                raise self.error(
                    f"{key}[{i}]",
                    f"expected a CUDA index (an integer >= 0), got {describe_value(item)}",
                )
        return tuple(value)

    def template(self, section: Mapping[str, object], key: str) -> tuple[str, str]:
        """'package.module.Class' split into the module and the class name."""
        value = section.get("template")
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected 'module.Class', got {describe_value(value)}")
        module, _, name = value.rpartition(".")
        if not module or not all(part.isidentifier() for part in value.split(".")):
            raise self.error(key, f"expected 'module.Class', got {describe_value(value)}")
        return module, name


def _provided_names(folder: Path, top: str) -> set[str]:
    """Top-level module names that ``folder`` provides: its modules and regular packages.

    Plain folders (data/, logs/) are left out, except the template's own top-level name, which
    may be a namespace package. Standard library names are left out too: a stray random.py beside
    the config does not replace the cached standard module.
    """
    suffixes = importlib.machinery.all_suffixes()
    names = {top} if (folder / top).is_dir() else set()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return names
    for entry in entries:
        if entry.is_dir():
            if any((entry / f"__init__{suffix}").is_file() for suffix in suffixes):
                names.add(entry.name)
            continue
        for suffix in suffixes:
            if entry.name.endswith(suffix):
                names.add(entry.name[: -len(suffix)])
                break
    return names - sys.stdlib_module_names


def _from_folder(module: ModuleType, folder: Path) -> bool:
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return False
    try:
        return Path(file).resolve().is_relative_to(folder)
    except OSError:
        return False


@contextmanager
def _importing_from(folder: Path, top: str) -> Iterator[None]:
    """Make ``folder`` importable, first on sys.path, and undo every trace afterwards.

    See the module docstring for what happens to sys.modules and why.
    """
    folder_entry = str(folder)
    with _LOAD_LOCK:
        provided = _provided_names(folder, top)
        saved_path = list(sys.path)
        had_finder = folder_entry in sys.path_importer_cache
        before = dict(sys.modules)
        set_aside = {
            name: module for name, module in before.items() if name.partition(".")[0] in provided
        }
        for name in set_aside:
            del sys.modules[name]
        sys.path.insert(0, folder_entry)
        importlib.invalidate_caches()  # the folder may have changed since a finder listed it
        try:
            yield
        finally:
            sys.path[:] = saved_path
            if not had_finder:
                sys.path_importer_cache.pop(folder_entry, None)
            for name, module in list(sys.modules.items()):
                if before.get(name) is module:
                    continue
                if name.partition(".")[0] in provided or _from_folder(module, folder):
                    del sys.modules[name]
            sys.modules.update(set_aside)


def _missing_members(value: object) -> list[str]:
    """Which ShardDescriptor members ``value`` lacks, looked up without running properties."""
    return [
        name
        for name in _PROTOCOL_MEMBERS
        if inspect.getattr_static(value, name, _ABSENT) is _ABSENT
    ]


def _build_descriptor(
    check: _Checker,
    folder: Path,
    template: str,
    module_name: str,
    class_name: str,
    params: Mapping[str, object],
) -> ShardDescriptor:
    key = "shard_descriptor.template"
    with _importing_from(folder, module_name.partition(".")[0]):
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise check.error(
                key, f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        factory: object = getattr(module, class_name, _ABSENT)
        if factory is _ABSENT:
            raise check.error(key, f"module {module_name!r} has no attribute {class_name!r}")
        if not callable(factory):
            raise check.error(key, f"{template} is not callable, got {describe_value(factory)}")
        try:
            descriptor: object = factory(**params)
        except Exception as exc:
            raise check.error(
                "shard_descriptor.params",
                f"{template}(**params) failed: {type(exc).__name__}: {exc}",
            ) from exc
    missing = _missing_members(descriptor)
    if missing:
        raise check.error(
            key,
            f"{template} built a {type(descriptor).__name__}, which is not a ShardDescriptor: "
            f"it has no {', '.join(missing)}",
        )
    # Checked statically above; isinstance() on Python < 3.12 would run the properties.
    return cast(ShardDescriptor, descriptor)


def load_envoy_config(path: str | os.PathLike[str]) -> EnvoyConfig:
    """Read an OpenFL envoy config YAML and build its shard descriptor.

    Raises EnvoyConfigError, naming the file and the key, for a missing or unreadable file,
    invalid YAML, a missing or mistyped key, a template that cannot be imported, a constructor
    that rejects the params, or an object that is not a ShardDescriptor.
    """
    file = Path(path).absolute()
    check = _Checker(file)
    try:
        with file.open("rb") as handle:
            raw_bytes = handle.read(MAX_YAML_BYTES + 1)
        if len(raw_bytes) > MAX_YAML_BYTES:
            raise check.error("", f"larger than {MAX_YAML_BYTES} bytes: not an envoy config")
        text = raw_bytes.decode("utf-8")
    except FileNotFoundError:
        raise check.error("", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise check.error("", f"cannot read it: {exc}") from exc
    try:
        data: object = load_yaml(text)  # bounded: aliases, nesting, size, numbers
    except YamlError as exc:
        raise check.error("", str(exc)) from None
    if data is None:
        raise check.error("", "empty document, expected a mapping with a shard_descriptor")
    raw = check.mapping(data, "(top level)")

    params = check.mapping(raw.get("params"), "params")
    cuda_devices = check.cuda_devices(params)
    install_requirements = check.boolean(params, "install_requirements", "params", True)
    review_experiment = check.boolean(params, "review_experiment", "params", False)

    plugins: dict[str, Mapping[str, object]] = {}
    for name, settings in check.mapping(
        raw.get("optional_plugin_components"), "optional_plugin_components"
    ).items():
        key = f"optional_plugin_components.{name}"
        plugin = check.mapping(settings, key)
        check.template(plugin, f"{key}.template")
        plugins[name] = plugin

    if "shard_descriptor" not in raw:
        raise check.missing("shard_descriptor", "a mapping with a template", raw)
    section = check.mapping(raw["shard_descriptor"], "shard_descriptor")
    if "template" not in section:
        raise check.missing("shard_descriptor.template", "'module.Class'", section)
    module_name, class_name = check.template(section, "shard_descriptor.template")
    template = f"{module_name}.{class_name}"
    descriptor_params = check.mapping(section.get("params"), "shard_descriptor.params")

    descriptor = _build_descriptor(
        check, file.parent.resolve(), template, module_name, class_name, descriptor_params
    )
    return EnvoyConfig(
        path=file,
        cuda_devices=cuda_devices,
        install_requirements=install_requirements,
        review_experiment=review_experiment,
        descriptor=descriptor,
        template=template,
        descriptor_params=descriptor_params,
        optional_plugin_components=plugins,
        raw=raw,
    )

"""OpenFL 1.5-1.7 envoy config files (envoy_config.yaml): read, check, build the descriptor.

The format is OpenFL's: ``params`` (cuda_devices, install_requirements, review_experiment),
``shard_descriptor`` (template 'module.Class' and params) and ``optional_plugin_components``.
Unknown keys are kept in ``EnvoyConfig.raw``: OpenFL configs carry extras. The template is
imported from the config's folder as ``fx envoy start`` imports it (see .template).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, SupportsIndex, cast

from shardclient._config.checks import Checker, read_config
from shardclient._config.template import import_attribute, importing_from
from shardclient._descriptor import ShardDescriptor, shard_info_from_descriptor
from shardclient._text import describe_value
from shardclient.messages import CudaDeviceInfo, ShardInfo

__all__ = ["EnvoyConfig", "load_envoy_config"]

_PROTOCOL_MEMBERS: Final = ("sample_shape", "target_shape", "dataset_description")
_ABSENT: Final = object()


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


def _missing_members(value: object) -> list[str]:
    """Which ShardDescriptor members ``value`` lacks, looked up without running properties."""
    return [
        name
        for name in _PROTOCOL_MEMBERS
        if inspect.getattr_static(value, name, _ABSENT) is _ABSENT
    ]


def _build_descriptor(
    check: Checker,
    folder: Path,
    template: str,
    module_name: str,
    class_name: str,
    params: Mapping[str, object],
) -> ShardDescriptor:
    key = "shard_descriptor.template"
    with importing_from(folder, module_name.partition(".")[0]):
        factory = import_attribute(check, key, folder, template)
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
    check = Checker(file)
    raw = read_config(file, check, "a shard_descriptor")

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

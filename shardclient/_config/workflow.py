"""OpenFL 1.9 envoy config files (the Workflow API's envoy_config.yaml): read and check.

The format is ``fx envoy start``'s: ``settings.director_host`` and ``settings.director_port``
(where the director is), ``params.install_requirements`` (true unless said otherwise, as in
OpenFL), and a section named after the envoy holding its private attributes, either
``private_attributes: module.attr`` (a dict) or ``callable_func: {template: module.func,
settings: {...}}`` (called with the settings as keywords). Those are imported and built by
OpenFL's collaborator in its own process, not here: this module checks their form only.
``params.review_experiment`` is shardclient's own (off unless said otherwise).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shardclient._config.checks import Checker, read_config
from shardclient._text import describe_value

__all__ = ["WorkflowEnvoyConfig", "load_workflow_config"]

logger = logging.getLogger("shardclient.config")


@dataclass(frozen=True)
class WorkflowEnvoyConfig:
    """A checked OpenFL 1.9 envoy config, for one envoy name."""

    path: Path
    envoy_name: str
    director_host: str | None
    director_port: int | None
    install_requirements: bool
    review_experiment: bool
    private_attributes: str | None
    """'module.attr' naming the private attributes dict, when the config gives one."""
    callable_func: str | None
    """'module.func' building the private attributes, when the config gives one."""
    callable_settings: Mapping[str, object]
    raw: Mapping[str, object]


def load_workflow_config(path: str | os.PathLike[str], envoy_name: str) -> WorkflowEnvoyConfig:
    """Read an OpenFL 1.9 envoy config YAML for envoy ``envoy_name``.

    Raises EnvoyConfigError, naming the file and the key, for a missing or unreadable file,
    invalid YAML, or a missing or mistyped key.
    """
    file = Path(path).absolute()
    check = Checker(file)
    raw = read_config(file, check, "settings and the envoy's section")
    settings = check.mapping(raw.get("settings"), "settings")
    host = settings.get("director_host")
    if host is not None and (not isinstance(host, str) or not host or " " in host):
        raise check.error(
            "settings.director_host", f"expected a host name, got {describe_value(host)}"
        )
    port = settings.get("director_port")
    if port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
    ):
        raise check.error(
            "settings.director_port", f"expected a port in 1..65535, got {describe_value(port)}"
        )
    params = check.mapping(raw.get("params"), "params")
    install_requirements = check.boolean(params, "install_requirements", "params", True)
    review_experiment = check.boolean(params, "review_experiment", "params", False)

    section = check.mapping(raw.get(envoy_name), envoy_name)
    private_attributes = callable_func = None
    callable_settings: dict[str, object] = {}
    if "callable_func" in section:
        function = check.mapping(section["callable_func"], f"{envoy_name}.callable_func")
        callable_func = ".".join(check.template(function, f"{envoy_name}.callable_func.template"))
        callable_settings = check.mapping(
            function.get("settings"), f"{envoy_name}.callable_func.settings"
        )
        if "private_attributes" in section:
            logger.warning(
                "%s: %s has both callable_func and private_attributes; OpenFL uses callable_func",
                file,
                envoy_name,
            )
    elif "private_attributes" in section:
        private_attributes = ".".join(
            check.template(section, f"{envoy_name}.private_attributes", "private_attributes")
        )
    elif section:
        raise check.error(
            envoy_name,
            f"expected private_attributes or callable_func, found {', '.join(map(str, section))}",
        )
    return WorkflowEnvoyConfig(
        path=file,
        envoy_name=envoy_name,
        director_host=host,
        director_port=port,
        install_requirements=install_requirements,
        review_experiment=review_experiment,
        private_attributes=private_attributes,
        callable_func=callable_func,
        callable_settings=callable_settings,
        raw=raw,
    )

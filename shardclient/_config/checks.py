"""Reading an envoy config file and the typed values in it; every failure names the file and
the key."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

from shardclient._config.bounded_yaml import MAX_YAML_BYTES, YamlError, load_yaml
from shardclient._errors import EnvoyConfigError
from shardclient._text import describe_value

__all__ = ["Checker", "read_config"]


class Checker:
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

    def template(
        self, section: Mapping[str, object], key: str, field: str = "template"
    ) -> tuple[str, str]:
        """The 'package.module.Name' at ``section[field]``, split into the module and the
        name; ``key`` names it in errors."""
        value = section.get(field)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected 'module.Name', got {describe_value(value)}")
        module, _, name = value.rpartition(".")
        if not module or not all(part.isidentifier() for part in value.split(".")):
            raise self.error(key, f"expected 'module.Name', got {describe_value(value)}")
        return module, name


def read_config(file: Path, check: Checker, expected: str) -> dict[str, object]:
    """The top-level mapping of the YAML file ``file``, read within bounds; ``expected`` says
    what an empty document lacks."""
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
        raise check.error("", f"empty document, expected a mapping with {expected}")
    return check.mapping(data, "(top level)")

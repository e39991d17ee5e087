"""Reading untrusted YAML (envoy configs, experiment plans) within bounds.

PyYAML's safe loader builds only plain data, but it happily composes a few hundred bytes of
aliases into a structure with billions of nodes (anything that walks it then runs out of
time or memory), recurses as deep as the nesting goes, and turns a huge digit string into
a ValueError. Here the text size, the nesting depth and the node count with every alias
expanded are bounded, and every failure is a YamlError whose message names the source and
never embeds the document.
"""

from __future__ import annotations

from typing import Final

import yaml

__all__ = ["YamlError", "load_yaml", "MAX_YAML_BYTES"]

MAX_YAML_BYTES: Final = 1024 * 1024
_MAX_DEPTH: Final = 64
_MAX_NODES: Final = 100_000


class YamlError(ValueError):
    """The text is not YAML within the bounds; the message says why (no document text)."""


class _BoundedLoader(yaml.SafeLoader):
    """A safe loader that stops composing past a nesting depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > _MAX_DEPTH:
                raise YamlError(f"nested deeper than {_MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in ``node`` with aliases expanded, counted without expanding them (memoized)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = _MAX_NODES + 1  # a node that contains itself expands forever
    total = 1
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            total += _expanded_size(child, sizes)
            if total > _MAX_NODES:
                break
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            total += _expanded_size(key, sizes) + _expanded_size(value, sizes)
            if total > _MAX_NODES:
                break
    sizes[id(node)] = total
    return total


def load_yaml(text: str) -> object:
    """Parse one YAML document into plain data (None for an empty one), within bounds."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlError(f"larger than {MAX_YAML_BYTES} bytes")
    loader = _BoundedLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YamlError("nested too deeply") from None
        if node is None:
            return None
        if _expanded_size(node, {}) > _MAX_NODES:
            raise YamlError(
                f"expands to more than {_MAX_NODES} values (aliases repeating aliases?)"
            )
        try:
            data: object = loader.construct_document(node)
        except (ValueError, OverflowError) as exc:
            raise YamlError(f"a value cannot be read: {str(exc)[:200]}") from None
        return data
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {_short(exc)}") from None
    finally:
        loader.dispose()


def _short(exc: yaml.YAMLError) -> str:
    """PyYAML's message with its position, without the quoted snippet of the document."""
    if isinstance(exc, yaml.MarkedYAMLError):
        where = exc.problem_mark
        position = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        return f"{exc.problem or exc.context or 'syntax error'}{position}"
    return str(exc)[:200]

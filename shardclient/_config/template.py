"""Importing what a config names ('module.attr') from the config's folder, as ``fx`` does.

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

import importlib
import importlib.machinery
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Final

from shardclient._config.checks import Checker

__all__ = ["import_attribute", "importing_from"]

_ABSENT: Final = object()
_LOAD_LOCK: Final = threading.Lock()


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
def importing_from(folder: Path, top: str) -> Iterator[None]:
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


def import_attribute(check: Checker, key: str, folder: Path, dotted: str) -> object:
    """The attribute ``dotted`` ('package.module.attr') names, imported with ``folder``
    first on sys.path; EnvoyConfigError naming ``key`` when it cannot be. Call it inside
    ``importing_from(folder, ...)`` when the attribute is used right away (a class to
    instantiate), since the folder's modules are unloaded afterwards."""
    module_name, _, name = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise check.error(
            key, f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    value: object = getattr(module, name, _ABSENT)
    if value is _ABSENT:
        raise check.error(key, f"module {module_name!r} has no attribute {name!r}")
    return value

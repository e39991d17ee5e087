"""Text from outside, made safe for where it goes: error messages, terminals, file names, the wire.

Pure functions with no I/O, used by every layer; nothing here raises for any input.
"""

from __future__ import annotations

import hashlib
import re
import reprlib

__all__ = ["archive_filename", "describe_value", "printable", "safe_stem", "unencodable"]

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 77
_REPR.maxlevel = 2
_MAX_PRINTABLE = 200  # characters of one value shown on a terminal or in a log line
_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 100


def describe_value(value: object) -> str:
    """A value and its type for an error message: bounded in length and cost (big containers
    are elided), and safe from a ``__repr__`` that raises."""
    try:  # reprlib bounds containers and str, not bytes: cut those first
        shown = value[:80] if isinstance(value, (bytes, bytearray, memoryview)) else value
        text = _REPR.repr(shown)
    except Exception:  # noqa: BLE001 - any failing __repr__: describe the type alone
        text = "<unprintable>"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def printable(value: object, limit: int = _MAX_PRINTABLE) -> str:
    """``value`` as one line of safe text: control characters escaped, cut at ``limit``."""
    text = value if isinstance(value, str) else repr(value)
    cleaned = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode()
        for ch in text[: limit + 1]
    )
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def unencodable(text: str) -> str | None:
    """Why ``text`` cannot go on the wire as UTF-8 (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.reason
    return None


def safe_stem(experiment_name: str) -> str:
    """A safe file name stem for an experiment: the name itself when it is harmless,
    otherwise a sanitized stem plus a digest of the full name (so distinct names never
    collide). Never a path: no separators, no leading dot, no NUL."""
    if not isinstance(experiment_name, str):
        raise ValueError(f"experiment name must be a str, got {experiment_name!r}")
    stem = _UNSAFE_IN_NAMES.sub("_", experiment_name).lstrip(".")
    if stem == experiment_name and 0 < len(stem) <= _MAX_STEM:
        return stem
    digest = hashlib.sha256(experiment_name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    stem = stem[:_MAX_STEM].rstrip("._") or "experiment"
    return f"{stem}-{digest}"


def archive_filename(experiment_name: str) -> str:
    """The file name of an experiment's archive: ``safe_stem(name) + ".zip"``
    (``archive_filename("../x")`` is ``_x-<digest>.zip``)."""
    return f"{safe_stem(experiment_name)}.zip"

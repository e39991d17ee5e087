"""CUDA_VISIBLE_DEVICES, parsed and resolved to physical devices as CUDA does it: pure functions.

The rules: the CUDA programming guide ("CUDA Environment Variables"), and where it is silent, what
libcuda (driver 580.159.04, CUDA 13.0, one H200) did with each value in tests/test_gpu_real.py:

- Unset: every GPU is visible, in CUDA's enumeration order. Empty: no GPU is visible.
- Otherwise a comma-separated list; CUDA index i is the i-th entry that survives. An entry is
  * ``GPU-<uuid>``: a GPU by UUID, in full or by any non-empty prefix naming exactly one GPU; the
    hex digits compare case-insensitively, ``GPU-`` itself must be upper case;
  * ``MIG-<uuid>``: a MIG device by its UUID, likewise;
  * ``MIG-GPU-<uuid>/<gpu instance>/<compute instance>``: a MIG device by its parent and ids;
  * anything else is an integer, a GPU's position in CUDA's enumeration order, read like C's
    ``strtoul``: leading whitespace and a ``+`` are skipped and anything after the digits is
    ignored (``' 0'``, ``'+0'``, ``'0abc'`` are 0). So ``' GPU-...'`` (a leading space) is invalid.
- Parsing stops at the first invalid entry (``-1``, other text, an empty entry, an unknown or
  ambiguous UUID, an index past the last GPU): the entries before it stay visible, the rest not.
- A device named twice in the same form makes the whole value invalid, no GPU visible: the same
  integer (``0,0``, ``00,0``), or two UUID entries for one device (``GPU-ab12,GPU-ab12cd``). A GPU
  named again in the other form (``0,GPU-<its uuid>``) stays visible once and the repeat ends the
  list (with one GPU we could not tell ending from skipping; ending is the cautious reading).
  Repeats after the entry that ended the list do not count (``0,abc,0`` is ``0``).
- Trailing whitespace after a UUID is ignored (``'GPU-ab12 '``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Ordinal",
    "GpuUuid",
    "MigUuid",
    "MigTriple",
    "Entry",
    "VisibleSpec",
    "MigDevice",
    "DeviceRef",
    "Resolution",
    "parse_visible_devices",
    "resolve_visible",
    "bare_uuid",
]

_WHITESPACE = " \t\n\v\f\r"
_LEADING_INT = re.compile(f"[{_WHITESPACE}]*\\+?([0-9]+)")
_MIG_TRIPLE = re.compile(r"MIG-(GPU-[^/]*)/([0-9]+)/([0-9]+)")


@dataclass(frozen=True)
class Ordinal:
    """An integer entry: the GPU at this position of CUDA's enumeration order."""

    value: int
    text: str


@dataclass(frozen=True)
class GpuUuid:
    """A ``GPU-`` entry: a GPU whose UUID starts with ``prefix`` (``GPU-`` included)."""

    prefix: str

    @property
    def text(self) -> str:
        return self.prefix


@dataclass(frozen=True)
class MigUuid:
    """A ``MIG-<uuid>`` entry: a MIG device whose UUID starts with ``prefix`` (``MIG-`` too)."""

    prefix: str

    @property
    def text(self) -> str:
        return self.prefix


@dataclass(frozen=True)
class MigTriple:
    """A ``MIG-GPU-<uuid>/<gi>/<ci>`` entry: a MIG device by parent GPU and instance ids."""

    gpu_prefix: str
    gpu_instance: int
    compute_instance: int
    text: str


Entry = Ordinal | GpuUuid | MigUuid | MigTriple


@dataclass(frozen=True)
class VisibleSpec:
    """A parsed CUDA_VISIBLE_DEVICES: ``entries`` None means unset (all devices visible)."""

    raw: str | None
    entries: tuple[Entry, ...] | None
    note: str | None = None
    """Why parsing stopped before the last entry (or that the value is empty), for messages."""

    @property
    def needs_mig(self) -> bool:
        return self.entries is not None and any(
            isinstance(e, (MigUuid, MigTriple)) for e in self.entries
        )

    @property
    def has_ordinals(self) -> bool:
        return self.entries is None or any(isinstance(e, Ordinal) for e in self.entries)


def _parse_entry(raw: str) -> Entry | None:
    if not raw.startswith(("GPU-", "MIG-")):
        m = _LEADING_INT.match(raw)
        return None if m is None else Ordinal(int(m.group(1)), raw)
    text = raw.rstrip(_WHITESPACE)
    if text.startswith("GPU-"):
        return GpuUuid(text) if len(text) > 4 else None
    if text.startswith("MIG-GPU-"):
        m = _MIG_TRIPLE.fullmatch(text)
        if m is None or len(m.group(1)) <= 4:
            return None
        return MigTriple(m.group(1), int(m.group(2)), int(m.group(3)), text)
    return MigUuid(text) if len(text) > 4 else None


def parse_visible_devices(value: str | None) -> VisibleSpec:
    """Parse a CUDA_VISIBLE_DEVICES value (None: unset) up to its first malformed entry.

    Never raises. Duplicates and entries naming no device are found by :func:`resolve_visible`,
    which needs the devices present.
    """
    if value is None:
        return VisibleSpec(None, None)
    if value == "":
        return VisibleSpec(value, (), "it is empty, which makes no device visible")
    entries: list[Entry] = []
    for text in value.split(","):
        entry = _parse_entry(text)
        if entry is None:
            return VisibleSpec(
                value,
                tuple(entries),
                f"entry {text!r} is not a device index or UUID, so it and the entries after it"
                " are ignored",
            )
        entries.append(entry)
    return VisibleSpec(value, tuple(entries))


def bare_uuid(uuid: str) -> str:
    """A UUID without its ``GPU-``/``MIG-`` type prefix, as libcuda reports it."""
    for prefix in ("GPU-", "MIG-"):
        if uuid.startswith(prefix):
            return uuid[len(prefix) :]
    return uuid


@dataclass(frozen=True)
class MigDevice:
    """A MIG device as NVML lists it: parent position in the GPU list and its identifiers."""

    gpu: int
    slot: int
    uuid: str | None
    gpu_instance: int
    compute_instance: int


@dataclass(frozen=True)
class DeviceRef:
    """A resolved device: a position in the GPU list, and in the MIG list for a MIG device."""

    gpu: int
    mig: int | None = None


@dataclass(frozen=True)
class Resolution:
    """The devices visible, CUDA index i being ``refs[i]``, and why any entry was dropped."""

    refs: tuple[DeviceRef, ...]
    note: str | None = None


def _prefix_of(prefix: str, uuid: str | None) -> bool:
    """Whether ``prefix`` starts ``uuid``: the type prefix exactly, the hex digits in any case."""
    return (
        uuid is not None
        and uuid[:4] == prefix[:4]
        and uuid[4:].lower().startswith(prefix[4:].lower())
    )


def _unique(entry_text: str, matches: list[int], names: Sequence[str | None]) -> int | str:
    """The one match's position, or the reason there is not exactly one."""
    if len(matches) == 1:
        return matches[0]
    if not matches:
        return f"entry {entry_text!r} matches no device"
    listed = ", ".join(str(names[i]) for i in matches)
    return f"entry {entry_text!r} is ambiguous: it matches {listed}"


def _resolve_entry(
    entry: Entry, gpu_uuids: Sequence[str | None], migs: Sequence[MigDevice]
) -> DeviceRef | str:
    if isinstance(entry, Ordinal):
        if entry.value < len(gpu_uuids):
            return DeviceRef(entry.value)
        return f"entry {entry.text!r} is past the last GPU ({len(gpu_uuids)} present)"
    if isinstance(entry, GpuUuid):
        hits = [i for i, u in enumerate(gpu_uuids) if _prefix_of(entry.prefix, u)]
        found = _unique(entry.text, hits, gpu_uuids)
        return DeviceRef(found) if isinstance(found, int) else found
    mig_uuids = [m.uuid for m in migs]
    if isinstance(entry, MigUuid):
        hits = [i for i, u in enumerate(mig_uuids) if _prefix_of(entry.prefix, u)]
    else:
        parents = [i for i, u in enumerate(gpu_uuids) if _prefix_of(entry.gpu_prefix, u)]
        if len(parents) != 1:
            reason = _unique(entry.text, parents, gpu_uuids)
            assert isinstance(reason, str)
            return reason
        hits = [
            i
            for i, m in enumerate(migs)
            if m.gpu == parents[0]
            and m.gpu_instance == entry.gpu_instance
            and m.compute_instance == entry.compute_instance
        ]
    found = _unique(entry.text, hits, mig_uuids)
    return DeviceRef(migs[found].gpu, found) if isinstance(found, int) else found


def resolve_visible(
    spec: VisibleSpec,
    gpu_uuids: Sequence[str | None],
    migs: Sequence[MigDevice] = (),
) -> Resolution:
    """Map each surviving entry to a device.

    ``gpu_uuids`` lists the GPUs in CUDA's enumeration order (None where a GPU's UUID could not be
    read); ``migs`` the MIG devices (needed only when ``spec.needs_mig``). Unset means every GPU,
    in that order. Resolution stops at an entry naming no device or several, like parsing does.
    """
    if spec.entries is None:
        return Resolution(tuple(DeviceRef(i) for i in range(len(gpu_uuids))))
    refs: list[DeviceRef] = []
    named_by_index: list[bool] = []
    note = spec.note
    for entry in spec.entries:
        found = _resolve_entry(entry, gpu_uuids, migs)
        if isinstance(found, str):
            note = f"{found}, so it and the entries after it are ignored"
            break
        if found in refs:
            if named_by_index[refs.index(found)] == isinstance(entry, Ordinal):
                return Resolution(
                    (),
                    f"entry {entry.text!r} names a device an earlier entry names in the same form,"
                    " which makes the whole value invalid (no device visible)",
                )
            note = (
                f"entry {entry.text!r} names a device an earlier entry names, so it and the"
                " entries after it are ignored"
            )
            break
        refs.append(found)
        named_by_index.append(isinstance(entry, Ordinal))
    return Resolution(tuple(refs), note)

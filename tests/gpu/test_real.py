"""On a real NVIDIA GPU: GpuMonitor agrees with nvidia-smi. Skipped where NVML finds no device."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from shardclient._gpu import GpuMonitor
from shardclient._gpu.libcuda import LibcudaUnavailable, cuda_gpu_uuids
from shardclient._gpu.nvml import PynvmlBackend
from shardclient._gpu.visible import bare_uuid

pytestmark = pytest.mark.gpu

MIB = 2**20
QUERY = "index,uuid,name,memory.total,memory.used,utilization.gpu,driver_version"


@dataclass(frozen=True)
class SmiRow:
    index: int
    uuid: str
    name: str
    total_mib: int
    used_mib: int
    utilization: str
    driver: str


def _nvidia_smi() -> list[SmiRow]:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi is not installed")
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = []
    for line in out.strip().splitlines():
        f = [part.strip() for part in line.split(",")]
        rows.append(SmiRow(int(f[0]), f[1], f[2], int(f[3]), int(f[4]), f[5], f[6]))
    return rows


@pytest.fixture
def monitor() -> Iterator[GpuMonitor]:
    """A monitor numbering devices as nvidia-smi does (PCI order, nothing hidden)."""
    mon = GpuMonitor(visible_devices=None, device_order="PCI_BUS_ID")
    if not mon.available:
        mon.close()
        pytest.skip(f"NVML is unavailable: {mon.unavailable_reason}")
    if not mon.devices():
        mon.close()
        pytest.skip("NVML finds no GPU")
    with mon:
        yield mon


def test_devices_match_nvidia_smi(monitor: GpuMonitor) -> None:
    ours = monitor.devices()
    smi = _nvidia_smi()
    assert len(ours) == len(smi)
    for info, row in zip(ours, smi):
        assert info.index == row.index
        assert info.name == row.name
        assert info.cuda_driver_version == row.driver
        assert abs(info.memory_total - row.total_mib * MIB) < MIB
        assert abs(info.memory_utilized - row.used_mib * MIB) <= MIB  # nvidia-smi's "Used" (v2)
        # Utilization may move between the two reads: compare the format only.
        assert info.device_utilization.endswith("%")
        assert info.device_utilization[:-1].isdigit() and row.utilization.isdigit()
        major, minor = info.cuda_version.split(".")
        assert major.isdigit() and minor.isdigit()


def test_used_memory_is_v2_not_v1(monitor: GpuMonitor) -> None:
    backend = PynvmlBackend()
    backend.init()
    try:
        handle = backend.device_handle(0)
        v1 = backend.memory_v1(handle)
        v2 = backend.memory_v2(handle)
    finally:
        backend.shutdown()
    [info] = monitor.devices([0])
    assert v2.used <= v1.used
    assert abs(info.memory_utilized - v2.used) < 64 * MIB


def test_uuid_entries_select_the_device(monitor: GpuMonitor) -> None:
    rows = _nvidia_smi()
    last = rows[-1]
    with GpuMonitor(visible_devices=last.uuid[:12]) as mon:
        [info] = mon.devices()
    assert info.index == 0
    assert abs(info.memory_total - last.total_mib * MIB) < MIB
    with GpuMonitor(visible_devices="GPU-bogus") as mon:
        assert mon.devices() == []


def test_libcuda_lists_the_same_gpus(monitor: GpuMonitor) -> None:
    try:
        uuids = cuda_gpu_uuids(None)
    except LibcudaUnavailable as exc:
        pytest.skip(f"libcuda is unavailable: {exc}")
    assert sorted(uuids) == sorted(bare_uuid(r.uuid) for r in _nvidia_smi())


def _values_to_compare(uuid: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES values exercising each parsing rule, for a machine's first GPU."""
    hexpart = uuid[4:]
    return [
        "0", " 0", "0 ", "\t0", "+0", "0abc", "0,", "0,,", ",0", "", " ", "abc", "-1", "0,-1",
        "0,0", "00,0", "1", "0,1", "1,0", "7",
        uuid, uuid[:12], "GPU-", f"GPU-{hexpart.upper()}", f"gpu-{hexpart}", hexpart,
        f" {uuid}", f"0,{uuid}", f"{uuid},0", "GPU-bogus", "GPU-bogus,0", "0,GPU-bogus",
        "MIG-bogus", f"MIG-{uuid}/0/0", f"0,MIG-{uuid}/0/0",
        f"{uuid},{uuid}", f"{uuid},{uuid[:12]}", f"{uuid} ", f"0, {uuid}", "0,GPU-bogus,0",
        "0,1,0", "0,abc,0", "0,-1,0", "GPU-6", f"GPU-{hexpart[:8].upper()}", "MIG-", "0,MIG-",
    ]  # fmt: skip


def test_visible_devices_are_read_as_cuda_reads_them(monitor: GpuMonitor) -> None:
    """For each value, ours must list what libcuda lists when given the same value."""
    try:
        cuda_gpu_uuids(None)
    except LibcudaUnavailable as exc:
        pytest.skip(f"libcuda is unavailable: {exc}")
    rows = {bare_uuid(r.uuid): r for r in _nvidia_smi()}
    first = min(rows.values(), key=lambda r: r.index).uuid
    table = []
    for value in _values_to_compare(first):
        try:
            want = [rows[u].name for u in cuda_gpu_uuids(None, visible_devices=value)]
        except LibcudaUnavailable as exc:
            table.append(f"BAD {value!r}: CUDA failed: {exc}")
            continue
        with GpuMonitor(visible_devices=value) as mon:
            ours = mon.devices()
        got = [d.name for d in ours]
        table.append(f"{'ok ' if want == got else 'BAD'} {value!r}: CUDA {want} ours {got}")
    print("\n".join(table))
    assert not [line for line in table if line.startswith("BAD")], "\n".join(table)

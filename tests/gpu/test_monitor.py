"""GpuMonitor against the fake NVML: formats, CUDA index mapping, degradation, lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from shardclient import GpuInfoError, ShardClientError
from shardclient._gpu import NOT_AVAILABLE, GpuMonitor
from shardclient._gpu.libcuda import LibcudaUnavailable
from shardclient._gpu.monitor import as_text, format_cuda_version
from shardclient._gpu.nvml import NvmlCode
from shardclient._gpu.visible import bare_uuid
from shardclient.messages import CudaDeviceInfo
from tests.helpers.gpu import (
    H200_DRIVER,
    H200_TOTAL,
    H200_USED_V1,
    H200_UUID,
    FakeGpu,
    FakeMig,
    FakeNvml,
)

SLOW = "GPU-00000000-0000-0000-0000-00000000000a"  # PCI first, CUDA (fastest first) last
FAST = "GPU-00000000-0000-0000-0000-00000000000b"


class FakeCudaOrder:
    """A CudaOrder answering a fixed order (bare UUIDs), or failing; records its calls."""

    def __init__(self, uuids: Sequence[str] | None) -> None:
        self.uuids = uuids
        self.calls: list[str | None] = []

    def __call__(self, device_order: str | None) -> Sequence[str]:
        self.calls.append(device_order)
        if self.uuids is None:
            raise LibcudaUnavailable("libcuda.so.1 cannot be loaded")
        return [bare_uuid(u) for u in self.uuids]


def monitor(
    fake: FakeNvml | None = None,
    visible: str | None = None,
    order: str | None = None,
    cuda: FakeCudaOrder | None = None,
) -> GpuMonitor:
    return GpuMonitor(
        visible_devices=visible,
        device_order=order,
        backend=fake if fake is not None else FakeNvml(),
        cuda_order=cuda if cuda is not None else FakeCudaOrder(None),
    )


def two_gpus() -> FakeNvml:
    return FakeNvml(
        [
            FakeGpu(uuid=SLOW, name="Slow", total=8 << 30),
            FakeGpu(uuid=FAST, name="Fast", total=80 << 30),
        ]
    )


def test_h200_readings_in_openfl_formats() -> None:
    with monitor() as mon:
        assert mon.available
        assert mon.devices() == [
            CudaDeviceInfo(
                index=0,
                memory_total=H200_TOTAL,
                memory_utilized=0,  # v2's "used", as nvidia-smi shows; v1 says 615 MiB
                device_utilization="0%",
                cuda_driver_version=H200_DRIVER,
                cuda_version="13.0",
                name="NVIDIA H200",
            )
        ]


def test_messages_are_ordinary_betterproto_messages() -> None:
    with monitor() as mon:
        [info] = mon.devices([0])
    same = CudaDeviceInfo().parse(bytes(info))
    assert same == info and same.to_dict() == info.to_dict()
    info.name = "renamed"
    assert info.name == "renamed"


@pytest.mark.parametrize(("version", "text"), [(13000, "13.0"), (12040, "12.4"), (11080, "11.8")])
def test_cuda_version_is_major_dot_minor(version: int, text: str) -> None:
    assert format_cuda_version(version) == text
    with monitor(FakeNvml(cuda=version)) as mon:
        assert mon.devices()[0].cuda_version == text


def test_v1_memory_only_where_v2_is_unsupported() -> None:
    fake = FakeNvml([FakeGpu(memory_v2_error=NvmlCode.FUNCTION_NOT_FOUND)])
    with monitor(fake) as mon:
        assert mon.devices()[0].memory_utilized == H200_USED_V1
        mon.devices()
    assert fake.calls["memory_v2"] == 1  # not asked again once unsupported
    assert fake.calls["memory_v1"] == 2


def test_unsupported_fields_become_placeholders_for_that_field_only() -> None:
    fake = FakeNvml(
        [
            FakeGpu(
                utilization_error=NvmlCode.NOT_SUPPORTED,
                memory_v2_error=NvmlCode.NOT_SUPPORTED,
                memory_v1_error=NvmlCode.NOT_SUPPORTED,
                name_error=NvmlCode.NOT_SUPPORTED,
            )
        ]
    )
    with monitor(fake) as mon:
        [info] = mon.devices()
    assert (info.device_utilization, info.memory_total, info.memory_utilized, info.name) == (
        NOT_AVAILABLE,
        0,
        0,
        NOT_AVAILABLE,
    )
    assert (info.cuda_driver_version, info.cuda_version) == (H200_DRIVER, "13.0")


def test_names_and_versions_as_bytes_or_undecodable_never_crash() -> None:
    fake = FakeNvml([FakeGpu(name=b"Tesla \xff\xfeX")], driver=b"470.57.02")
    with monitor(fake) as mon:
        [info] = mon.devices()
    assert info.name == "Tesla \ufffd\ufffdX"
    assert info.cuda_driver_version == "470.57.02"
    assert as_text("plain") == "plain"


def test_without_nvml_nothing_is_available_and_asking_names_the_reason() -> None:
    for code, reason in [
        (NvmlCode.LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"),
        (NvmlCode.DRIVER_NOT_LOADED, "Driver Not Loaded"),
    ]:
        fake = FakeNvml(init_error=code)
        with monitor(fake) as mon:
            assert not mon.available
            assert mon.unavailable_reason is not None and reason in mon.unavailable_reason
            assert mon.devices() == []
            assert mon.devices([]) == []
            with pytest.raises(GpuInfoError, match=f"CUDA device 0: NVML is unavailable: {reason}"):
                mon.devices([0])
        assert fake.calls["shutdown"] == 0


def test_a_lost_gpu_raises_naming_its_index_and_others_still_read() -> None:
    fake = FakeNvml([FakeGpu(uuid=SLOW), FakeGpu(uuid=FAST)])
    with monitor(fake, order="PCI_BUS_ID") as mon:
        mon.devices()
        fake.gpus[1].lost = True
        with pytest.raises(
            GpuInfoError, match=r"CUDA device 1 \(GPU-[0-9a-f-]+b\) is lost: GPU is lost"
        ):
            mon.devices()
        assert [d.index for d in mon.devices([0])] == [0]


def test_a_gpu_lost_before_the_first_request_is_reported_when_asked() -> None:
    fake = FakeNvml([FakeGpu(uuid=SLOW, lost=True), FakeGpu(uuid=FAST)])
    with monitor(fake, visible="1,0", order="PCI_BUS_ID") as mon:
        assert mon.devices([0])[0].index == 0
        with pytest.raises(GpuInfoError, match="CUDA device 1 .*GPU is lost"):
            mon.devices([1])


def test_other_nvml_failures_raise_instead_of_dropping_readings() -> None:
    fake = FakeNvml([FakeGpu(utilization_error=NvmlCode.UNKNOWN)])
    with monitor(fake) as mon, pytest.raises(GpuInfoError, match="CUDA device 0 .*Unknown Error"):
        mon.devices()
    with monitor(FakeNvml(system_error=NvmlCode.UNKNOWN)) as mon:
        with pytest.raises(GpuInfoError, match="NVML cannot list the GPUs"):
            mon.devices()


def test_an_index_that_is_not_visible_raises_when_asked_and_only_for_it() -> None:
    with monitor(visible="0") as mon:
        with pytest.raises(
            GpuInfoError, match=r"CUDA device 1 is not visible: 1 CUDA device visible"
        ):
            mon.devices([1])
        with pytest.raises(GpuInfoError, match="CUDA device -1 is not visible"):
            mon.devices([-1])
        assert len(mon.devices([0])) == 1  # the next health check is not poisoned
    assert issubclass(GpuInfoError, ShardClientError)


def test_an_unknown_uuid_is_named_in_the_error() -> None:
    with monitor(visible="GPU-bogus") as mon:
        assert mon.devices() == []
        with pytest.raises(GpuInfoError, match="'GPU-bogus' matches no device"):
            mon.devices([0])


def test_an_ambiguous_uuid_is_named_in_the_error() -> None:
    with monitor(two_gpus(), visible="GPU-0000") as mon:
        with pytest.raises(GpuInfoError, match="'GPU-0000' is ambiguous"):
            mon.devices([0])


def test_empty_and_duplicate_values_make_no_device_visible() -> None:
    for value in ("", "0,0"):
        with monitor(visible=value) as mon:
            assert mon.devices() == []
            with pytest.raises(GpuInfoError, match="not visible"):
                mon.devices([0])


def test_cuda_index_follows_cuda_visible_devices_not_nvml_order() -> None:
    with monitor(two_gpus(), visible=f"{FAST},{SLOW}") as mon:
        assert [(d.index, d.name) for d in mon.devices()] == [(0, "Fast"), (1, "Slow")]
        assert [d.name for d in mon.devices([1])] == ["Slow"]


def test_integer_entries_count_in_cuda_order_learnt_from_libcuda() -> None:
    cuda = FakeCudaOrder([FAST, SLOW])
    with monitor(two_gpus(), visible="0", cuda=cuda) as mon:
        assert [d.name for d in mon.devices()] == ["Fast"]
    assert cuda.calls == [None]
    with monitor(two_gpus(), visible=None, cuda=FakeCudaOrder([FAST, SLOW])) as mon:
        assert [d.name for d in mon.devices()] == ["Fast", "Slow"]


def test_pci_bus_id_order_needs_no_libcuda() -> None:
    cuda = FakeCudaOrder([FAST, SLOW])
    with monitor(two_gpus(), visible="0", order="PCI_BUS_ID", cuda=cuda) as mon:
        assert [d.name for d in mon.devices()] == ["Slow"]
    assert cuda.calls == []


def test_without_libcuda_pci_order_is_assumed_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shardclient.gpu")
    with monitor(two_gpus(), visible="1,0", cuda=FakeCudaOrder(None)) as mon:
        for _ in range(3):
            assert [d.name for d in mon.devices()] == ["Fast", "Slow"]
    notes = [r.getMessage() for r in caplog.records if "PCI bus order" in r.getMessage()]
    assert len(notes) == 1 and "libcuda.so.1 cannot be loaded" in notes[0]


def test_libcuda_disagreeing_with_nvml_falls_back_to_pci_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shardclient.gpu")
    with monitor(two_gpus(), cuda=FakeCudaOrder([FAST])) as mon:
        assert [d.name for d in mon.devices()] == ["Slow", "Fast"]
    assert any("do not match" in r.getMessage() for r in caplog.records)


def test_uuid_only_values_and_a_single_gpu_never_ask_libcuda() -> None:
    cuda = FakeCudaOrder([FAST, SLOW])
    with monitor(two_gpus(), visible=FAST, cuda=cuda) as mon:
        mon.devices()
    with monitor(FakeNvml(), visible="0", cuda=cuda) as mon:
        mon.devices()
    assert cuda.calls == []


def test_mig_devices_by_uuid_and_by_triple() -> None:
    migs: list[FakeMig | None] = [
        FakeMig("MIG-11111111-aaaa", 1, 0, name="MIG one"),
        None,
        FakeMig("MIG-22222222-bbbb", 2, 0, name="MIG two", total=4 << 30, used=7),
    ]
    fake = FakeNvml([FakeGpu(uuid=H200_UUID, migs=migs)])
    with monitor(fake, visible=f"MIG-2222,MIG-{H200_UUID}/1/0") as mon:
        two, one = mon.devices()
    assert (two.index, two.name, two.memory_total, two.memory_utilized) == (
        0,
        "MIG two",
        4 << 30,
        7,
    )
    assert two.device_utilization == NOT_AVAILABLE  # NVML has no utilization for MIG devices
    assert (one.index, one.name) == (1, "MIG one")


def test_nvml_is_initialized_once_and_devices_only_reads_memory_and_utilization() -> None:
    fake = two_gpus()
    with monitor(fake, order="PCI_BUS_ID") as mon:
        mon.devices()
        before = fake.calls.copy()
        for _ in range(10):
            mon.devices()
        per_call = fake.calls - before
    assert fake.calls["init"] == 1
    assert per_call == {"memory_v2": 20, "utilization": 20}


def test_close_is_idempotent_and_shuts_nvml_down_once() -> None:
    fake = FakeNvml()
    mon = monitor(fake)
    mon.close()
    mon.close()
    assert fake.calls["shutdown"] == 1 and fake.initialized == 0
    with pytest.raises(GpuInfoError, match="closed"):
        mon.devices()


def test_environment_is_read_when_the_monitor_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{FAST}")
    mon = GpuMonitor(backend=two_gpus(), cuda_order=FakeCudaOrder(None))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with mon:
        assert mon.visible_devices == FAST
        assert [d.name for d in mon.devices()] == ["Fast"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with GpuMonitor(backend=two_gpus(), visible_devices="", cuda_order=FakeCudaOrder(None)) as mon:
        assert mon.devices() == []


def test_health_checks_take_devices_output_as_it_is() -> None:
    from shardclient._client.interactive_aio import CudaDevicesInfo, cuda_device_messages

    with monitor(two_gpus(), order="PCI_BUS_ID") as mon:
        readings: CudaDevicesInfo = mon.devices()  # the type send_health_check takes
        assert cuda_device_messages(readings) == mon.devices()


class _RaisingSequence(Sequence[int]):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: object) -> int:  # type: ignore[override]  # hostile on purpose
        raise KeyError(index)


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ("0", r"^indices: expected a sequence of CUDA indices, got '0' \(str\)$"),
        (0, r"^indices: expected a sequence of CUDA indices, got 0 \(int\)$"),
        (["0"], r"^indices\[0\] must be an int, got '0' \(str\)$"),
        ([0, True], r"^indices\[1\] must be an int, got True \(bool\)$"),
        ([0, 1.0], r"^indices\[1\] must be an int, got 1.0 \(float\)$"),
        ({0: 1}, r"^indices: expected a sequence of CUDA indices, got \{0: 1\} \(dict\)$"),
        (
            _RaisingSequence(),
            r"^indices: expected a sequence of CUDA indices, got .*_RaisingSequence",
        ),
    ],
)
def test_indices_that_are_not_ints_name_the_entry(indices: object, message: str) -> None:
    with monitor(two_gpus()) as mon, pytest.raises(TypeError, match=message):
        mon.devices(indices)  # type: ignore[arg-type]  # wrong on purpose


def test_indices_may_be_any_iterable_of_ints() -> None:
    np = pytest.importorskip("numpy")
    with monitor(two_gpus()) as mon:
        assert [d.index for d in mon.devices(np.array([1, 0]))] == [
            1,
            0,
        ]  # an ndarray, as users pass
        assert [d.index for d in mon.devices((0,))] == [0]

"""CUDA's device order from libcuda: the reader over a fake driver, the child process for real."""

from __future__ import annotations

import sys

import pytest

from shardclient._gpu.libcuda import (
    CUDA_ERROR_NO_DEVICE,
    LibcudaUnavailable,
    cuda_gpu_uuids,
    format_uuid,
    read_gpu_uuids,
)

H200_RAW = bytes.fromhex("87bc3e161d863e3285bf81356808572e")
OTHER_RAW = bytes(range(16))


class FakeDriver:
    """A CudaDriver: devices given as raw UUIDs in CUDA order; ``fail`` maps call -> CUresult."""

    def __init__(self, uuids: list[bytes], fail: dict[str, int] | None = None) -> None:
        self.uuids = uuids
        self.fail = fail or {}

    def init(self) -> int:
        return self.fail.get("init", 0)

    def device_count(self) -> tuple[int, int]:
        return self.fail.get("count", 0), len(self.uuids)

    def device(self, ordinal: int) -> tuple[int, int]:
        return self.fail.get("device", 0), 100 + ordinal

    def uuid(self, device: int) -> tuple[int, bytes]:
        return self.fail.get("uuid", 0), self.uuids[device - 100]


def test_uuids_are_formatted_as_nvml_prints_them() -> None:
    assert format_uuid(H200_RAW) == "87bc3e16-1d86-3e32-85bf-81356808572e"


def test_reader_lists_devices_in_cuda_order() -> None:
    assert read_gpu_uuids(FakeDriver([OTHER_RAW, H200_RAW])) == [
        "00010203-0405-0607-0809-0a0b0c0d0e0f",
        "87bc3e16-1d86-3e32-85bf-81356808572e",
    ]


def test_no_device_is_an_empty_list_not_a_failure() -> None:
    assert read_gpu_uuids(FakeDriver([], {"init": CUDA_ERROR_NO_DEVICE})) == []


@pytest.mark.parametrize("call", ["init", "count", "device", "uuid"])
def test_driver_failures_say_which_call(call: str) -> None:
    with pytest.raises(LibcudaUnavailable, match="CUresult 999"):
        read_gpu_uuids(FakeDriver([H200_RAW], {call: 999}))


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_the_child_answer_is_parsed() -> None:
    command = child('print(\'{"uuids": ["a", "b"]}\')')
    assert cuda_gpu_uuids(None, command=command) == ["a", "b"]


def test_the_child_sees_the_order_but_no_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    code = (
        "import json, os; print(json.dumps({'uuids': ["
        "os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'),"
        " os.environ.get('CUDA_DEVICE_ORDER', 'unset')]}))"
    )
    assert cuda_gpu_uuids("FASTEST_FIRST", command=child(code)) == ["unset", "FASTEST_FIRST"]
    assert cuda_gpu_uuids(None, command=child(code)) == ["unset", "unset"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ('print(\'{"error": "libcuda.so.1 cannot be loaded"}\')', "libcuda.so.1 cannot be loaded"),
        ("import sys; sys.stderr.write('boom\\n'); sys.exit(3)", "status 3: boom"),
        ("print('[1, 2]')", "answered"),
        ("import time; time.sleep(30)", "could not run"),
    ],
)
def test_child_failures_become_libcuda_unavailable(code: str, message: str) -> None:
    with pytest.raises(LibcudaUnavailable, match=message):
        cuda_gpu_uuids(None, command=child(code), timeout=0.5)


def test_a_missing_interpreter_is_libcuda_unavailable() -> None:
    with pytest.raises(LibcudaUnavailable, match="could not run"):
        cuda_gpu_uuids(None, command=["/nonexistent/python"])


def test_the_real_child_answers_either_way() -> None:
    """Here without a GPU it reports why; on a GPU machine it lists the GPUs."""
    try:
        uuids = cuda_gpu_uuids(None)
    except LibcudaUnavailable as exc:
        assert str(exc)
    else:
        assert all(len(u) == 36 for u in uuids)

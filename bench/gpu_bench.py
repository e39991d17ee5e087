"""GpuMonitor.devices() per device vs OpenFL's monitor approach, measured in the same run.

OpenFL's approach (openfl 1.6 PynvmlCUDADeviceMonitor): NVML initialized once, then for each field
a fresh nvmlDeviceGetHandleByIndex, v1 memory read twice (total, used), plus the two system
queries, per device. Ours: handles, names and system strings resolved once; per call, v2 memory and
utilization per device, and the message built.

    python bench/gpu_bench.py            # the real GPU; says so and exits 0 where there is none
    python bench/gpu_bench.py --fake     # the fake H200 from the tests: checks the code path only
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "generated"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from shardclient._gpu import GpuMonitor, NvmlBackend  # noqa: E402
from shardclient._gpu.monitor import as_text, format_cuda_version  # noqa: E402
from shardclient.messages import CudaDeviceInfo  # noqa: E402

Reading = tuple[int, int, int, str, str, str, str]


def openfl_style_pynvml(nvml: Any, index: int) -> Reading:
    """OpenFL 1.6's reads for one device, straight on pynvml (one handle lookup per field)."""
    driver = as_text(nvml.nvmlSystemGetDriverVersion())
    total = int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).total)
    used = int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index)).used)
    util = f"{nvml.nvmlDeviceGetUtilizationRates(nvml.nvmlDeviceGetHandleByIndex(index)).gpu}%"
    name = as_text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(index)))
    cuda = format_cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion()))
    return index, total, used, util, driver, cuda, name


def openfl_style_backend(nvml: NvmlBackend, index: int) -> Reading:
    """The same sequence of NVML calls through an NvmlBackend (for the fake)."""
    driver = as_text(nvml.driver_version())
    total = nvml.memory_v1(nvml.device_handle(index)).total
    used = nvml.memory_v1(nvml.device_handle(index)).used
    util = f"{nvml.utilization(nvml.device_handle(index))}%"
    name = as_text(nvml.name(nvml.device_handle(index)))
    cuda = format_cuda_version(nvml.cuda_driver_version())
    return index, total, used, util, driver, cuda, name


def per_call_us(call: Callable[[], object], calls: int, repeats: int) -> list[float]:
    """Microseconds per call, one figure per repeat."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        out.append((time.perf_counter() - start) / calls * 1e6)
    return out


def summary(samples: list[float], devices: int) -> str:
    per = [s / devices for s in samples]
    return f"{min(per):8.2f} us/device best, {statistics.median(per):8.2f} median"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake", action="store_true", help="use the tests' fake H200 NVML")
    parser.add_argument("--calls", type=int, default=2000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    inits = [0]
    backend: NvmlBackend | None = None
    raw_nvml: Any = None
    if args.fake:
        from tests.helpers.gpu import FakeNvml

        fake = FakeNvml()
        backend = fake
        label = "fake H200 (tests/helpers/gpu.py): validates the code path, not NVML's cost"
    else:
        try:
            import pynvml
        except ImportError as exc:
            print(f"nvidia-ml-py is not installed ({exc}); nothing to measure")
            return 0
        raw_nvml = pynvml
        real_init = pynvml.nvmlInit

        def counting_init() -> None:
            inits[0] += 1
            real_init()

        pynvml.nvmlInit = counting_init
        label = "real NVML"

    # Pinned to PCI order so that CUDA index i is NVML index i for the OpenFL-style reads.
    made = time.perf_counter()
    mon = GpuMonitor(visible_devices=None, device_order="PCI_BUS_ID", backend=backend)
    made = time.perf_counter() - made
    with mon:
        if not mon.available:
            print(
                f"No GPU here: NVML is unavailable ({mon.unavailable_reason}); nothing to measure"
            )
            return 0
        first = time.perf_counter()
        readings = mon.devices()
        first = time.perf_counter() - first
        if not readings:
            print("NVML finds no GPU here; nothing to measure")
            return 0
        n = len(readings)
        indices = range(n)

        openfl_read: Callable[[int], Reading]
        if raw_nvml is not None:
            openfl_read = functools.partial(openfl_style_pynvml, raw_nvml)
        else:
            assert backend is not None
            openfl_read = functools.partial(openfl_style_backend, backend)

        def openfl() -> None:
            for i in indices:
                openfl_read(i)

        def openfl_betterproto() -> None:
            for i in indices:
                r = openfl_read(i)
                CudaDeviceInfo(
                    index=r[0],
                    memory_total=r[1],
                    memory_utilized=r[2],
                    device_utilization=r[3],
                    cuda_driver_version=r[4],
                    cuda_version=r[5],
                    name=r[6],
                )

        inits_before = inits[0] + (fake.calls["init"] if args.fake else 0)
        ours: list[float] = []
        theirs: list[float] = []
        theirs_msg: list[float] = []
        for _ in range(args.repeats):  # interleaved, so drift hits all three alike
            ours += per_call_us(mon.devices, args.calls, 1)
            theirs += per_call_us(openfl, args.calls, 1)
            theirs_msg += per_call_us(openfl_betterproto, args.calls, 1)
        inits_after = inits[0] + (fake.calls["init"] if args.fake else 0)

        print(f"GPU bench on {label}: {n} device(s), {args.calls} calls x {args.repeats} repeats")
        print(f"  monitor creation (nvmlInit once)           {made * 1e3:8.2f} ms")
        print(f"  first devices() (resolves the mapping)     {first * 1e3:8.2f} ms")
        print(f"  ours: devices(), message included          {summary(ours, n)}")
        print(f"  OpenFL approach: NVML reads only           {summary(theirs, n)}")
        print(f"  OpenFL approach + betterproto message      {summary(theirs_msg, n)}")
        print(f"  nvmlInit calls during the timed loops: {inits_after - inits_before}")
        ours_best = min(ours) / n
        print(f"  under 50 us/device: {'yes' if ours_best < 50 else 'NO'} ({ours_best:.2f} us)")
        print("  readings, ours vs OpenFL's (v1 'used' includes driver-reserved memory):")
        for info in readings:
            o = openfl_read(info.index)
            print(
                f"    ours:   index={info.index} total={info.memory_total}"
                f" used={info.memory_utilized} util={info.device_utilization!r}"
                f" driver={info.cuda_driver_version!r} cuda={info.cuda_version!r}"
                f" name={info.name!r}"
            )
            print(
                f"    OpenFL: index={o[0]} total={o[1]} used={o[2]} util={o[3]!r}"
                f" driver={o[4]!r} cuda={o[5]!r} name={o[6]!r}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""scripts/gpu_device_check.py's comparison (the device check of issue 25 runs only where a GPU is lent, so its
arithmetic is checked here): the tracer's metric series of the program's process, last value per series, set
beside the program's own log; a figure off by one is reported, and series of other processes are not counted."""
from __future__ import annotations

import importlib.util
import json

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("gpu_device_check", ROOT / "scripts" / "gpu_device_check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

PID, OTHER = 4242, 99
MIB = 1 << 20
LOG = {"calls": {"cudaMalloc": 4, "cudaFree": 2, "cudaMemcpy": 60, "cudaLaunchKernel": 40,
                 "cudaDeviceSynchronize": 20, "cudaStreamSynchronize": 1001},
       "errors": 1, "h2d_bytes": 160 * MIB, "d2h_bytes": 80 * MIB, "leaked_bytes": 3 * MIB,
       "kernels": ["scale_kernel", "add_kernel"], "launches_each": 20}


def metric(name: str, value: float, pid: int = PID, **attrs) -> str:
    return json.dumps({"type": "metric", "name": name, "kind": "sum", "value": value,
                       "attributes": {"process.pid": pid, "process.executable.name": "gpucheck", **attrs}})


def records(calls_of_malloc: int = 3) -> list[str]:
    fn = "ebpftool.gpu.cuda.function"
    lines = [metric("ebpftool.gpu.cuda.calls", n, **{fn: f}) for f, n in LOG["calls"].items() if f != "cudaMalloc"]
    lines += [
        metric("ebpftool.gpu.cuda.calls", 1, **{fn: "cudaMalloc"}),   # an earlier snapshot of the same series
        metric("ebpftool.gpu.cuda.calls", calls_of_malloc, **{fn: "cudaMalloc"}),
        metric("ebpftool.gpu.cuda.calls", 1, **{fn: "cudaMalloc", "error.type": "2"}),
        metric("ebpftool.gpu.cuda.calls", 1, **{fn: "cuMemAlloc_v2", "error.type": "2"}),   # the driver's, under it
        metric("ebpftool.gpu.cuda.calls", 7, pid=OTHER, **{fn: "cudaMalloc"}),
        metric("ebpftool.gpu.cuda.memcpy.bytes", 160 * MIB, **{"ebpftool.gpu.cuda.memcpy.direction": "host_to_device"}),
        metric("ebpftool.gpu.cuda.memcpy.bytes", 80 * MIB, **{"ebpftool.gpu.cuda.memcpy.direction": "device_to_host"}),
        metric("ebpftool.gpu.cuda.kernel.launches", 20, **{"ebpftool.gpu.cuda.kernel.name": "_Z12scale_kernelPffi"}),
        metric("ebpftool.gpu.cuda.kernel.launches", 20, **{"ebpftool.gpu.cuda.kernel.name": "_Z10add_kernelPfPKfi"}),
        metric("ebpftool.gpu.driver.ioctls", 300, **{"ebpftool.gpu.driver.device": "nvidiactl"}),
        metric("ebpftool.gpu.driver.ioctls", 2, **{"ebpftool.gpu.driver.device": "nvidia0", "error.type": "EINVAL"}),
    ]
    return lines


def figures(tmp_path, lines: list[str]) -> list[dict]:
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join([json.dumps({"type": "resource"}), *lines]) + "\n")
    summary = {"tracers": {"gpu": {"headline": {"leaked_bytes": 3 * MIB}}}}
    return check.compare(LOG, [302, 2], check.series_totals(path, PID), summary)


def test_every_figure_agrees_when_the_tracer_saw_what_the_program_did(tmp_path):
    checks = figures(tmp_path, records())
    assert [c["what"] for c in checks if not c["ok"]] == []
    assert len(checks) == 14


def test_a_call_missing_is_reported(tmp_path):
    bad = [c for c in figures(tmp_path, records(calls_of_malloc=2)) if not c["ok"]]
    assert [(c["what"], c["program"], c["ebpftool"]) for c in bad] == [("calls of cudaMalloc", 4, 3)]

"""`ebpftool gpu` against real processes: NVIDIA's real libcudart (its calls return 35 without a
driver, but every call goes through the probes), and a fake libcuda / fake runtime built by gcc
from tests/fixtures/gpu for what needs successful calls (allocations, nesting, blocking).

Everything asserted is what the OTLP receiver decoded, or what ebpftool printed or wrote.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from ebpftool import semconv as sc
from ebpftool.tracers.gpu.cuda_api import FUNCTIONS
from tests.conftest import EbpftoolProcess, run_ebpftool
from tests.fixtures.gpu.workload import CUDART, Workload, build_fixtures, series, total
from tests.otlp_receiver import GrpcReceiver

pytestmark = [pytest.mark.bpf, pytest.mark.timeout(120)]

FN, NESTED, DIR = sc.EBPFTOOL_GPU_FUNCTION, sc.EBPFTOOL_GPU_NESTED, sc.EBPFTOOL_GPU_MEMCPY_DIRECTION
ERR = sc.ERROR_TYPE
INSUFFICIENT_DRIVER = "35"  # cudaErrorInsufficientDriver: what every real libcudart call returns here
RUNTIME_FUNCTIONS = len([f for f in FUNCTIONS if f.library == "cudart"])  # all exported by libcudart.so.13

# A process that does ioctls on stand-in device files (regular files: ioctl() fails with ENOTTY,
# but the syscall tracepoints see it exactly as they see one on /dev/nvidia0).
IOCTL_CLIENT = textwrap.dedent("""
    import fcntl, os, sys
    fds = {"pre": os.open(sys.argv[1], os.O_RDWR)}
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "open":
            fds[args[0]] = os.open(args[1], os.O_RDWR)
        elif cmd == "ioctl":
            for _ in range(int(args[2])):
                try:
                    fcntl.ioctl(fds[args[0]], int(args[1], 0))
                except OSError:
                    pass
        print("ok", flush=True)
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_fixtures(tmp_path_factory.mktemp("gpu-fixtures"))


@pytest.fixture(scope="module")
def devices():
    """Stand-ins for /dev/nvidiactl and /dev/nvidia0 under a short path (the prefix is compiled in)."""
    d = Path(tempfile.mkdtemp(prefix="gpu", dir="/tmp"))
    for name in ("nvidiactl", "nvidia0"):
        (d / name).write_bytes(b"")
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def ioctl_client(devices):
    """Started before the tracer with nvidiactl already open: found through /proc/PID/fd."""
    proc = subprocess.Popen([sys.executable, "-c", IOCTL_CLIENT, str(devices / "nvidiactl")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def traced(built, devices, ioctl_client):
    """One tracer for the module: the real runtime, the fake driver, the fake runtime, and a
    --lib that does not exist."""
    receiver = GrpcReceiver()
    tracer = EbpftoolProcess([
        "gpu", "--no-discover", "--lib", CUDART, "--lib", built["libcuda"], "--lib", built["fake_cudart"],
        "--lib", "/nonexistent/libcuda.so.1", "--ioctl-path-prefix", f"{devices}/nvidia",
        "--otlp-endpoint", receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1", "--no-ui",
    ]).start()
    yield receiver, tracer
    tracer.stop()
    receiver.stop()


def wait_total(receiver, metric, pid, attrs, expected, timeout=20.0):
    receiver.wait_for(lambda: total(receiver, metric, pid, attrs) >= expected, timeout=timeout)
    return total(receiver, metric, pid, attrs)


def test_real_libcudart_calls_bytes_and_return_codes(traced, built):
    receiver, _ = traced
    # started after the tracer: the probes are on the library file, so new processes are traced
    with Workload(built["workload"], CUDART) as w:
        assert w.do("cudaMalloc 4096")[0] == INSUFFICIENT_DRIVER
        for size, kind in ((1000, 1), (2000, 1), (3000, 2)):
            assert w.do(f"cudaMemcpy {size} {kind}") == [INSUFFICIENT_DRIVER]
        w.do("cudaMemcpyAsync 500 3")
        # what a --default-stream per-thread build calls instead
        assert w.do("cudaMemcpy_ptds 700 1") == [INSUFFICIENT_DRIVER]
        w.do("cudaMemcpyAsync_ptsz 800 2")
        w.do("cudaStreamSynchronize_ptsz 0")
        w.do("cudaLaunchKernel_ptsz 2")
        w.do("cudaDeviceSynchronize")
        w.do("cudaStreamSynchronize 0")
        w.do("cudaStreamSynchronize 0")
        assert wait_total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cudaStreamSynchronize"}, 2) == 2

        def calls(fn, **extra):
            return total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: fn, ERR: INSUFFICIENT_DRIVER, **extra})

        assert calls("cudaMalloc") == 1
        assert calls("cudaMemcpy", **{DIR: "host_to_device"}) == 2
        assert calls("cudaMemcpy", **{DIR: "device_to_host"}) == 1
        assert calls("cudaMemcpyAsync", **{DIR: "device_to_device"}) == 1
        assert calls("cudaDeviceSynchronize") == 1
        assert calls("cudaMemcpy_ptds", **{DIR: "host_to_device"}) == 1
        assert calls("cudaMemcpyAsync_ptsz", **{DIR: "device_to_host"}) == 1
        assert calls("cudaStreamSynchronize_ptsz") == 1
        assert total(receiver, sc.EBPFTOOL_GPU_KERNEL_LAUNCHES, w.pid,
                     {FN: "cudaLaunchKernel_ptsz", sc.EBPFTOOL_GPU_KERNEL_NAME: "vector_add_kernel_stub"}) == 2
        # no call succeeded: no series without error.type
        assert series(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {ERR: None}) == []
        point = series(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cudaMalloc"})[0]
        assert point.attributes[sc.EBPFTOOL_GPU_LIBRARY] == "cudart"
        assert point.attributes[sc.PROCESS_EXECUTABLE_NAME] == "cuda_workload"
        assert point.attributes[NESTED] is False

        def copied(direction):
            return total(receiver, sc.EBPFTOOL_GPU_MEMCPY_BYTES, w.pid, {DIR: direction, ERR: INSUFFICIENT_DRIVER})

        assert copied("host_to_device") == 3000 + 700
        assert copied("device_to_host") == 3000 + 800
        assert copied("device_to_device") == 500
        assert total(receiver, sc.EBPFTOOL_GPU_MEMORY_REQUESTED, w.pid,
                     {FN: "cudaMalloc", sc.EBPFTOOL_GPU_MEMORY_TYPE: "device", ERR: INSUFFICIENT_DRIVER}) == 4096
        # the duration histogram counts the same calls, with the exported bucket bounds
        hist = series(receiver, sc.EBPFTOOL_GPU_CALL_DURATION, w.pid, {FN: "cudaMemcpy", DIR: "host_to_device"})
        assert len(hist) == 1 and hist[0].count == 2 and sum(hist[0].bucket_counts) == 2
        assert tuple(hist[0].bounds) == sc.GPU_CALL_DURATION_BUCKETS
        assert 0 < hist[0].min <= hist[0].max < 1.0
        # a failed allocation hands out nothing: nothing outstanding
        assert total(receiver, sc.EBPFTOOL_GPU_MEMORY_OUTSTANDING, w.pid) == 0


def test_a_process_in_a_pod_is_named_by_its_pod_and_container(traced, built, pod_cgroups):
    receiver, _ = traced
    uid, container_id, cgroup = pod_cgroups()
    with Workload(built["workload"], CUDART, cgroup=cgroup) as in_pod, Workload(built["workload"], CUDART) as outside:
        for w in (in_pod, outside):
            w.do("cudaMemcpy 100 1")
            assert wait_total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cudaMemcpy"}, 1) == 1
        for metric in (sc.EBPFTOOL_GPU_CALLS, sc.EBPFTOOL_GPU_CALL_DURATION, sc.EBPFTOOL_GPU_MEMCPY_BYTES):
            [point] = series(receiver, metric, in_pod.pid, {FN: "cudaMemcpy"})
            assert (point.attributes[sc.K8S_POD_UID], point.attributes[sc.CONTAINER_ID]) == (uid, container_id)
            [point] = series(receiver, metric, outside.pid, {FN: "cudaMemcpy"})
            assert sc.K8S_POD_UID not in point.attributes and sc.CONTAINER_ID not in point.attributes


def test_kernel_launches_are_named_by_the_host_stub_symbol(traced, built):
    receiver, _ = traced
    with Workload(built["workload"], CUDART) as w:
        w.do("cudaLaunchKernel 3")
        attrs = {FN: "cudaLaunchKernel", sc.EBPFTOOL_GPU_KERNEL_NAME: "vector_add_kernel_stub",
                 ERR: INSUFFICIENT_DRIVER}
        assert wait_total(receiver, sc.EBPFTOOL_GPU_KERNEL_LAUNCHES, w.pid, attrs, 3) == 3


def test_runtime_calls_into_the_driver_are_counted_once(traced, built):
    receiver, _ = traced
    with Workload(built["workload"], built["fake_cudart"], built["libcuda"]) as w:
        assert w.do("cudaMalloc 4096")[0] == "0"
        w.do("cudaMemcpy 100 1")
        w.do("cudaMemcpy 200 2")
        assert wait_total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cuMemcpyDtoH_v2"}, 1) == 1
        # both levels are calls; the driver's is marked nested
        assert total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cudaMalloc", NESTED: False}) == 1
        assert total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cuMemAlloc_v2", NESTED: True}) == 1
        assert total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cuMemcpyHtoD_v2", NESTED: True}) == 1
        assert series(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {ERR: "35"}) == []
        # bytes and memory are counted at the outer call only
        assert total(receiver, sc.EBPFTOOL_GPU_MEMORY_OUTSTANDING, w.pid) == 4096
        assert total(receiver, sc.EBPFTOOL_GPU_MEMORY_REQUESTED, w.pid) == 4096
        assert total(receiver, sc.EBPFTOOL_GPU_MEMCPY_BYTES, w.pid, {DIR: "host_to_device"}) == 100
        assert total(receiver, sc.EBPFTOOL_GPU_MEMCPY_BYTES, w.pid, {DIR: "device_to_host"}) == 200
        assert series(receiver, sc.EBPFTOOL_GPU_MEMCPY_BYTES, w.pid, {FN: "cuMemcpyHtoD_v2"}) == []
        w.do("cudaFree 0")
        assert receiver.wait_for(lambda: total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cudaFree"}) == 1)
        assert total(receiver, sc.EBPFTOOL_GPU_MEMORY_OUTSTANDING, w.pid) == 0
        # stream-ordered allocation (PyTorch's cudaMallocAsync backend): the same accounting, once
        assert w.do("cudaMallocAsync 8192")[0] == "0"
        assert wait_total(receiver, sc.EBPFTOOL_GPU_MEMORY_OUTSTANDING, w.pid, {}, 8192) == 8192
        assert total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cuMemAllocAsync", NESTED: True}) == 1
        w.do("cudaFreeAsync 1")
        assert receiver.wait_for(lambda: total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cudaFreeAsync"}) == 1)
        assert total(receiver, sc.EBPFTOOL_GPU_MEMORY_OUTSTANDING, w.pid) == 0


def test_blocking_calls_above_the_threshold_become_spans(traced, built):
    receiver, _ = traced
    with Workload(built["workload"], built["libcuda"]) as w:
        w.do("cuCtxSynchronize")          # the fake sleeps 2 ms: above the 1 ms default
        w.do("cuStreamSynchronize 10")    # sleeps 10 us: below
        w.do("cuStreamSynchronize 3000")  # sleeps 3 ms: above
        w.do("cuMemcpyHtoD_v2 64")        # returns at once: below
        assert receiver.wait_for(lambda: len([s for s in receiver.spans() if s.attributes.get(sc.PROCESS_PID) == w.pid]) >= 2)
        assert wait_total(receiver, sc.EBPFTOOL_GPU_CALLS, w.pid, {FN: "cuStreamSynchronize"}, 2) == 2
        mine = [s for s in receiver.spans() if s.attributes.get(sc.PROCESS_PID) == w.pid]
        # The calls that sleep 2 and 3 ms are spans; a short call is one only if it really took 1 ms or more
        # (a busy machine may preempt a 10 us sleep for that long): every span lasted at least the threshold.
        assert sorted(s.name for s in mine if s.end_ns - s.start_ns >= 2_000_000) == ["cuCtxSynchronize",
                                                                                      "cuStreamSynchronize"]
        assert all(s.end_ns - s.start_ns >= 1_000_000 for s in mine), [(s.name, s.end_ns - s.start_ns) for s in mine]
        stream_span = max((s for s in mine if s.name == "cuStreamSynchronize"), key=lambda s: s.end_ns - s.start_ns)
        assert stream_span.attributes[sc.EBPFTOOL_GPU_STREAM] == hex(3000)
        assert stream_span.attributes[sc.THREAD_ID] == w.pid  # single-threaded: tid == pid
        assert stream_span.end_ns - stream_span.start_ns >= 3_000_000
        assert stream_span.status_code == 0


def test_ioctls_on_device_nodes_are_counted_by_device_and_request(traced, devices, ioctl_client):
    receiver, _ = traced
    pid = ioctl_client.pid

    def send(line):
        ioctl_client.stdin.write(line + "\n")
        ioctl_client.stdin.flush()
        assert ioctl_client.stdout.readline().strip() == "ok"

    send("ioctl pre 0xc020462a 5")                 # fd opened before the tracer started
    send(f"open new {devices / 'nvidia0'}")        # opened while tracing
    send("ioctl new 0xc0104629 7")
    metric = sc.EBPFTOOL_GPU_IOCTLS
    ctl = {sc.EBPFTOOL_GPU_DEVICE: "nvidiactl", sc.EBPFTOOL_GPU_IOCTL_REQUEST: "0xc020462a", ERR: "ENOTTY"}
    dev0 = {sc.EBPFTOOL_GPU_DEVICE: "nvidia0", sc.EBPFTOOL_GPU_IOCTL_REQUEST: "0xc0104629", ERR: "ENOTTY"}
    assert wait_total(receiver, metric, pid, dev0, 7) == 7
    assert total(receiver, metric, pid, ctl) == 5
    assert total(receiver, sc.EBPFTOOL_GPU_IOCTL_DURATION, pid, dev0) == 7


def test_a_missing_library_is_reported_and_the_others_are_traced(traced):
    _, tracer = traced
    err = "".join(tracer._err_lines)
    assert "--lib /nonexistent/libcuda.so.1: no such file; tracing the other libraries" in err
    assert f"probing {RUNTIME_FUNCTIONS} functions of {CUDART} (--lib)" in err
    assert tracer.proc.poll() is None  # still running (the tests above traced through it)


def test_leak_report_lists_allocations_never_freed(built, tmp_path, grpc_receiver):
    report = tmp_path / "leaks.json"
    tracer = EbpftoolProcess(["gpu", "--no-discover", "--lib", built["libcuda"], "--leak-report", str(report),
                              "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1", "--no-ui"]).start()
    try:
        with Workload(built["workload"], built["libcuda"]) as w:
            pointers = [w.do(f"cuMemAlloc_v2 {n}")[1] for n in (1000, 2000, 3000)]
            assert w.do("cuMemFree_v2 1") == ["0"]
            assert wait_total(grpc_receiver, sc.EBPFTOOL_GPU_MEMORY_OUTSTANDING, w.pid,
                              {sc.EBPFTOOL_GPU_MEMORY_TYPE: "device"}, 4000) == 4000
            # A reset frees everything untraced; the next allocation gets the first address again and
            # replaces what was remembered there: outstanding 4000 - 1000 + 5000.
            assert w.do("cuDevicePrimaryCtxReset_v2 0") == ["0"]
            assert w.do("cuMemAlloc_v2 5000")[1] == pointers[0]
            assert wait_total(grpc_receiver, sc.EBPFTOOL_GPU_MEMORY_OUTSTANDING, w.pid,
                              {sc.EBPFTOOL_GPU_MEMORY_TYPE: "device"}, 8000, timeout=5) == 8000
            assert w.close() == 0
            pid = w.pid
    finally:
        assert tracer.stop() == 0
    data = json.loads(report.read_text())
    assert [p["pid"] for p in data["processes"]] == [pid]
    leaked = data["processes"][0]
    assert leaked["executable"] == "cuda_workload"
    assert leaked["exited"] is True
    assert (leaked["count"], leaked["bytes"]) == (2, 8000)
    assert sorted((a["size"], a["pointer"]) for a in leaked["allocations"]) == \
        [(3000, hex(int(pointers[2], 16))), (5000, hex(int(pointers[0], 16)))]
    assert {a["function"] for a in leaked["allocations"]} == {"cuMemAlloc_v2"}
    assert f"unfreed by pid {pid} (cuda_workload, exited)" in tracer.stdout
    assert "2 allocations, 8000 B" in tracer.stdout
    assert tracer.figures("gpu")["kernel"]["allocations_at_remembered_address"] == 1, tracer.stdout


def test_libraries_are_found_in_the_maps_of_processes_before_and_after_start(built, tmp_path, grpc_receiver):
    # copies of the real runtime outside every install path: only /proc/PID/maps can reveal them
    early_lib, late_lib = tmp_path / "early" / "libcudart.so.13", tmp_path / "late" / "libcudart.so.13"
    for lib in (early_lib, late_lib):
        lib.parent.mkdir()
        shutil.copy(CUDART, lib)
    with Workload(built["workload"], str(early_lib)) as early:
        tracer = EbpftoolProcess(["gpu", "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc", "--interval", "1",
                                  "--no-ui"]).start()
        try:
            with Workload(built["workload"], str(late_lib)) as late:
                for _ in range(2):
                    early.do("cudaMalloc 64")
                # the late library is probed at the next scan of /proc: poke until it counts (on a busy
                # machine the scan and its attaches can take many seconds)
                receiver = grpc_receiver
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    late.do("cudaDeviceSynchronize")
                    if total(receiver, sc.EBPFTOOL_GPU_CALLS, late.pid, {FN: "cudaDeviceSynchronize"}):
                        break
                    receiver.wait_for(lambda: False, timeout=0.25)
                assert total(receiver, sc.EBPFTOOL_GPU_CALLS, late.pid, {FN: "cudaDeviceSynchronize"}), tracer.stderr
                for _ in range(3):
                    late.do("cudaMalloc 64")
                assert wait_total(receiver, sc.EBPFTOOL_GPU_CALLS, late.pid, {FN: "cudaMalloc"}, 3) == 3
                assert total(receiver, sc.EBPFTOOL_GPU_CALLS, early.pid, {FN: "cudaMalloc"}) == 2
        finally:
            assert tracer.stop() == 0
    assert f"probing {RUNTIME_FUNCTIONS} functions of {early_lib} (mapped by pid {early.pid})" in tracer.stderr
    assert f"probing {RUNTIME_FUNCTIONS} functions of {late_lib} (mapped by pid {late.pid})" in tracer.stderr


def test_no_library_at_all_says_how_to_point_at_one():
    r = run_ebpftool(["gpu", "--no-discover", "--duration", "1", "--no-ui"])
    assert r.returncode == 0, r.stderr
    assert "no CUDA library found" in r.stderr
    assert "point at one with --lib PATH" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--ioctl-path-prefix", "dev/nvidia"], "--ioctl-path-prefix must be an absolute path"),
    (["--pid", "4000000"], "--pid 4000000: no such process"),
])
def test_bad_input_is_one_sentence(args, message):
    r = run_ebpftool(["gpu", "--no-discover", "--duration", "1", "--no-ui", *args])
    assert r.returncode == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_pid_limits_tracing_to_one_process_tree(built, grpc_receiver):
    # the parent shell is watched from the start; its child is forked after the tracer started
    parent = subprocess.Popen(["sh", "-c", f"read go; {built['workload']} {CUDART}; true"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    tracer = EbpftoolProcess(["gpu", "--no-discover", "--lib", CUDART, "--pid", str(parent.pid),
                              "--otlp-endpoint", grpc_receiver.endpoint, "--otlp-protocol", "grpc",
                              "--interval", "1", "--no-ui"]).start()
    try:
        with Workload(built["workload"], CUDART) as outsider:
            parent.stdin.write("go\n")
            parent.stdin.flush()
            child = int(parent.stdout.readline().split()[1])
            for _ in range(2):
                parent.stdin.write("cudaMalloc 64\n")
                parent.stdin.flush()
                assert parent.stdout.readline().startswith("ok")
            outsider.do("cudaMalloc 64")
            assert wait_total(grpc_receiver, sc.EBPFTOOL_GPU_CALLS, child, {FN: "cudaMalloc"}, 2) == 2
            assert total(grpc_receiver, sc.EBPFTOOL_GPU_CALLS, outsider.pid) == 0
    finally:
        parent.kill()
        parent.wait()
        assert tracer.stop() == 0


def test_summary_json_has_the_headline_of_the_run_per_process(built, tmp_path):
    """--summary-json's gpu headline against what two workloads did through the fake driver: one still running
    at the end (its copies, its blocking time, what it holds), one that exited holding an allocation (a leak)."""
    figures = tmp_path / "summary.json"
    tracer = EbpftoolProcess(["gpu", "--no-discover", "--lib", built["libcuda"], "--interval", "1", "--ui",
                              "--summary-json", str(figures)]).start()
    try:
        with Workload(built["workload"], built["libcuda"]) as running, \
                Workload(built["workload"], built["libcuda"]) as leaking:
            for n in (1000, 3000):
                running.do(f"cuMemAlloc_v2 {n}")
            assert running.do("cuMemFree_v2 0") == ["0"]
            for _ in range(3):
                assert running.do("cuMemcpyHtoD_v2 4096") == ["0"]
            for _ in range(2):
                assert running.do("cuMemcpyDtoH_v2 1000") == ["0"]
                assert running.do("cuStreamSynchronize 50000") == ["0"]  # the fake driver sleeps 50 ms
            leaking.do("cuMemAlloc_v2 2000")
            assert leaking.close() == 0
            assert tracer.stop() == 0, tracer.stderr
    finally:
        if tracer.proc.poll() is None:
            tracer.stop()
    head = json.loads(figures.read_text())["tracers"]["gpu"]["headline"]
    assert head["calls"] == 10 + 1
    assert head["calls_per_second"] == pytest.approx(head["calls"] / head["seconds"])
    assert (head["bytes_host_to_device"], head["bytes_device_to_host"]) == (3 * 4096, 2 * 1000)
    assert head["outstanding_bytes"] == 3000            # the running one's; the exited one's is a leak
    assert (head["leaked_allocations"], head["leaked_bytes"]) == (1, 2000)
    assert 0.1 <= head["sync_seconds"] < head["seconds"]
    assert head["sync_share"] == pytest.approx(head["sync_seconds"] / head["seconds"])
    by_pid = {p["pid"]: p for p in head["processes"]}
    mine = by_pid[running.pid]
    assert mine["executable"] == "cuda_workload" and mine["calls"] == 10
    assert (mine["bytes_host_to_device"], mine["bytes_device_to_host"], mine["outstanding_bytes"]) == \
        (3 * 4096, 2 * 1000, 3000)
    assert 0.1 <= mine["sync_seconds"] <= head["sync_seconds"]
    # the table's headline comes first, in words
    rows = [line.split("│")[2].strip() for line in tracer.stdout.splitlines() if line.count("│") >= 4]
    gpu_rows = [r for r in rows if r]
    assert gpu_rows.index("calls per second") < gpu_rows.index("libraries traced")
    assert re.search(r"leaked \(exited processes\)\s*│\s*1 allocation, 2.0 kB", tracer.stdout), tracer.stdout
    # The live view's last frame (200 columns): the running one holds 3.0 kB, the exited one leaked 2.0 kB.
    view = tracer.stdout.split("ebpftool summary")[0].splitlines()
    assert re.search(rf"^\s*{running.pid}\s+cuda_workload\s.*\s3\.0 kB\s+-\s*$", "\n".join(view), re.M), view
    assert re.search(rf"^\s*{leaking.pid}\s+cuda_workload \(exited\)\s.*1 allocation, 2\.0 kB\s*$", "\n".join(view),
                     re.M), view

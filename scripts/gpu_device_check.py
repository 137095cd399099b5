#!/usr/bin/env python3
"""`ebpftool gpu` on a machine with an NVIDIA GPU and its driver and no network: the check of issue 25.

    sudo /opt/ebpftool/venv/bin/python scripts/gpu_device_check.py prepare      # here: writes .gpu-check/
    python3 scripts/gpu_device_check.py run OUT                                  # there, as root

(scripts/gpu-device-check.sh runs either.) `prepare` builds, on this machine, what the other lacks:
  - scripts/gpu_check/check.cu with nvcc and `-cudart shared` (its calls go through libcudart.so, where the
    uprobes are; the libcudart.so.13 it was built against travels with it): allocations, copies each way, two kernels launched each round, synchronisation, a
    deliberate leak, a failing call, then a timed loop of one cheap traced call; it prints what it did as JSON;
  - scripts/gpu_check/ioctl_count.c, LD_PRELOADed into it: its own count of ioctls on /dev/nvidia*;
  - BCC's runtime from Debian's packages (.deb files: the bcc Python package, libbcc_bpf.so.0, libbpf, libelf):
    the tracer's process needs no compiler (ebpftool.core.bcc_lib), and the other machine has none;
  - the gpu tracer's BPF program compiled here into a compile cache keyed by the program's text alone (the
    span budget is split over CPUs, so once per likely CPU count): there is no clang there to compile it;
  - wheels of the tracer's Python dependencies for that machine's Python.
`run` unpacks those, starts `ebpftool gpu` (metrics to JSONL, a summary JSON), runs the program, stops the
tracer, and sets the tracer's figures for that process beside the program's own: calls per function, calls
that failed, bytes each way, launches per kernel name, the leak, ioctls. Then the cost of a traced call: the
program's timed loop without and under the tracer, alternating. It writes OUT/report.json and exits 1 if a
figure disagrees. Not part of the test suite (no GPU in CI).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import jsonl_records, latest_metric_points  # noqa: E402

BUNDLE = ROOT / ".gpu-check"
NVCC = "/usr/local/cuda/bin/nvcc"
CUDART = "/usr/local/cuda/lib64/libcudart.so.13"
DEBS = ("python3-bpfcc", "libbpfcc", "libbpf1", "libelf1")
# The tracer's Python dependencies, at the versions installed here, for the other machine's Python (3.12; its own
# PyYAML is used: Debian's here has no wheel).
WHEELS = ("typer", "rich", "shellingham", "annotated-doc", "typing_extensions", "click", "markdown-it-py", "mdurl",
          "pygments", "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-semantic-conventions",
          "opentelemetry-proto", "opentelemetry-exporter-otlp-proto-common", "opentelemetry-exporter-otlp-proto-grpc",
          "opentelemetry-exporter-otlp-proto-http", "opentelemetry-exporter-prometheus", "prometheus_client",
          "protobuf", "googleapis-common-protos", "importlib_metadata", "zipp", "requests", "urllib3", "idna",
          "charset-normalizer", "certifi", "grpcio", "pydantic", "pydantic_core", "annotated-types", "typing-inspection")
TARGET_PYTHON = "3.12"
CPU_COUNTS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)
ROUNDS, COST_CALLS, COST_ROUNDS = 20, 200_000, 3
READY = "probes attached"


def text_key(text: str, cflags) -> str:
    """The bundle's compile-cache key: the program's text alone (its defines included), not this node's kernel
    and paths as ebpftool.core.bpf_cache keys it: the program is compiled here for the other machine."""
    return hashlib.sha256(text.encode()).hexdigest()


# -- here ----------------------------------------------------------------------------------------------
def prepare() -> None:
    if os.geteuid() != 0:
        raise SystemExit("prepare compiles and loads the gpu tracer's program: run it as root")
    if not os.path.exists(NVCC):
        raise SystemExit(f"prepare needs CUDA's compiler at {NVCC}")
    shutil.rmtree(BUNDLE, ignore_errors=True)
    for sub in ("debs", "wheels", "bpf-cache"):
        (BUNDLE / sub).mkdir(parents=True)
    src = ROOT / "scripts" / "gpu_check"
    subprocess.run([NVCC, "-O2", "-cudart", "shared", "-o", str(BUNDLE / "gpucheck"), str(src / "check.cu")], check=True)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(BUNDLE / "ioctl_count.so"), str(src / "ioctl_count.c"),
                    "-ldl"], check=True)
    (BUNDLE / "lib").mkdir()   # the runtime it was built against (the other machine has the driver, libcuda)
    shutil.copy(os.path.realpath(CUDART), BUNDLE / "lib" / os.path.basename(CUDART))
    subprocess.run(["apt-get", "download", *DEBS], cwd=BUNDLE / "debs", check=True, capture_output=True)
    from importlib import metadata  # noqa: PLC0415
    pins = []
    for name in WHEELS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass   # not one of this Python's: the other machine's own is used
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", TARGET_PYTHON, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "-d", str(BUNDLE / "wheels"), *pins], check=True)
    for cpus in CPU_COUNTS:   # ebpftool gpu's program as each CPU count makes it, compiled into the bundle's cache
        run_tracer_briefly(cpus)
    entries = sorted((BUNDLE / "bpf-cache").glob("*.bpfc"))
    if len(entries) < len(CPU_COUNTS) // 2:
        raise SystemExit(f"prepare: only {len(entries)} compiled programs in {BUNDLE / 'bpf-cache'}")
    size = sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())
    print(f"{BUNDLE}: {size / 1e6:.1f} MB ({len(entries)} compiled programs); carry it to the GPU machine "
          f"with the tree and run: scripts/gpu-device-check.sh run OUT")


def run_tracer_briefly(cpus: int) -> None:
    env = {**os.environ, "EBPFTOOL_BPF_CACHE": str(BUNDLE / "bpf-cache"), "GPU_CHECK_CPUS": str(cpus)}
    subprocess.run([sys.executable, __file__, "tracer", "gpu", "--duration", "0.2", "--no-ui", "--no-discover"],
                   env=env, check=True, capture_output=True, timeout=300)


def tracer(args: list[str]) -> None:
    """ebpftool in this process, its compile cache keyed by text_key (and the CPU count GPU_CHECK_CPUS)."""
    sys.path.insert(0, str(ROOT))
    if os.environ.get("GPU_CHECK_CPUS"):
        cpus = int(os.environ["GPU_CHECK_CPUS"])
        os.cpu_count = lambda: cpus
    from ebpftool.core import bpf_cache  # noqa: PLC0415
    bpf_cache.cache_key = text_key
    from ebpftool.cli import main  # noqa: PLC0415
    sys.argv = ["ebpftool", *args]
    main()


# -- there ---------------------------------------------------------------------------------------------
def runtime_env(site: Path, root: Path) -> dict[str, str]:
    libdir = root / "usr" / "lib" / "x86_64-linux-gnu"
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(root / "usr/lib/python3/dist-packages"),
                                                         str(ROOT)]),
            "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(BUNDLE / "lib"), str(libdir),
                                                             os.environ.get("LD_LIBRARY_PATH")])),
            "PYTHONUNBUFFERED": "1"}


def unpack(work: Path, wheels: bool) -> dict[str, str]:
    """BCC's runtime and the wheels unpacked under work; the bundle's compiled programs in a private cache."""
    if not (BUNDLE / "gpucheck").exists():
        raise SystemExit(f"no bundle at {BUNDLE}: run `scripts/gpu-device-check.sh prepare` where nvcc is, and "
                         "carry .gpu-check with the tree")
    root, site, cache = work / "root", work / "site", work / "bpf-cache"
    root.mkdir(parents=True)
    for deb in sorted((BUNDLE / "debs").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), *map(str, sorted((BUNDLE / "wheels").glob("*.whl")))], check=True)
    cache.mkdir(mode=0o700, parents=True)
    for entry in (BUNDLE / "bpf-cache").glob("*.bpfc"):   # the cache takes only private files of root
        shutil.copy(entry, cache / entry.name)
        os.chmod(cache / entry.name, 0o600)
    env = runtime_env(site, root)
    env["EBPFTOOL_BPF_CACHE"] = str(cache)
    return env


def libcudart_of(program: Path, env: dict[str, str]) -> str:
    out = subprocess.run(["ldd", str(program)], capture_output=True, text=True, env=env).stdout
    for line in out.splitlines():
        if "libcudart.so" in line and "=>" in line:
            return line.split("=>")[1].split()[0]
    raise SystemExit(f"{program} does not link libcudart.so: {out.strip()}")


def start_tracer(env: dict[str, str], out: Path, lib: str, tag: str) -> subprocess.Popen:
    log = open(out / f"tracer-{tag}.log", "w")
    proc = subprocess.Popen([sys.executable, __file__, "tracer", "gpu", "--no-ui", "--lib", lib, "--interval", "1", "--overwrite",
                             "--jsonl", str(out / f"metrics-{tag}.jsonl"), "--summary-json", str(out / f"summary-{tag}.json")],
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if READY in (out / f"tracer-{tag}.log").read_text():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the tracer did not attach; its output:\n{(out / f'tracer-{tag}.log').read_text()[-3000:]}")


def stop_tracer(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)


def run_program(env: dict[str, str], out: Path, tag: str, rounds: int, cost_calls: int) -> tuple[dict, list[int], int]:
    """The program's own log, its ioctl count on NVIDIA nodes (calls, failed) and its pid."""
    counts = out / f"ioctls-{tag}.txt"
    penv = {**env, "LD_PRELOAD": str(BUNDLE / "ioctl_count.so"), "IOCTL_COUNT_FILE": str(counts)}
    proc = subprocess.Popen([str(BUNDLE / "gpucheck"), str(rounds), str(cost_calls)], env=penv,
                            stdout=subprocess.PIPE, text=True)
    stdout, _ = proc.communicate(timeout=600)
    log = json.loads(stdout.strip().splitlines()[-1])
    ioctls = [int(v) for v in counts.read_text().split()] if counts.exists() else [0, 0]
    return log, ioctls, proc.pid


def series_totals(path: Path, pid: int) -> dict[str, dict[tuple, float]]:
    """The last value of each cumulative metric series of process pid: name -> {attributes: value}."""
    points = latest_metric_points(jsonl_records(path), lambda r: r.get("attributes", {}).get("process.pid") == pid)
    return {name: {tuple(sorted((k, v) for k, v in r["attributes"].items() if k != "process.pid")): r.get("value", 0)
                   for r in recs} for name, recs in points.items()}


def total(series: dict[tuple, float], **match) -> float:
    return sum(v for attrs, v in series.items() if all(dict(attrs).get(k) == want for k, want in match.items()))


def compare(log: dict, ioctls: list[int], totals: dict, summary: dict) -> list[dict]:
    calls = totals.get("ebpftool.gpu.cuda.calls", {})
    copies = totals.get("ebpftool.gpu.cuda.memcpy.bytes", {})
    launches = totals.get("ebpftool.gpu.cuda.kernel.launches", {})
    driver = totals.get("ebpftool.gpu.driver.ioctls", {})
    checks = []

    def check(what: str, program, tracer) -> None:
        checks.append({"what": what, "program": program, "ebpftool": tracer, "ok": program == tracer})

    for fn, n in log["calls"].items():
        check(f"calls of {fn}", n, int(total(calls, **{"ebpftool.gpu.cuda.function": fn})))
    failed = int(sum(v for attrs, v in calls.items()   # the program's own calls (not the driver's under them)
                     if "error.type" in dict(attrs) and dict(attrs).get("ebpftool.gpu.cuda.function") in log["calls"]))
    check("calls that failed", log["errors"], failed)
    check("bytes host to device", log["h2d_bytes"],
          int(total(copies, **{"ebpftool.gpu.cuda.memcpy.direction": "host_to_device"})))
    check("bytes device to host", log["d2h_bytes"],
          int(total(copies, **{"ebpftool.gpu.cuda.memcpy.direction": "device_to_host"})))
    for kernel in log["kernels"]:
        got = int(sum(v for attrs, v in launches.items() if kernel in str(dict(attrs).get("ebpftool.gpu.cuda.kernel.name"))))
        check(f"launches of {kernel}", log["launches_each"], got)
    headline = summary["tracers"]["gpu"]["headline"]
    check("bytes leaked (the process exited)", log["leaked_bytes"], headline.get("leaked_bytes"))
    check("ioctls on /dev/nvidia*", ioctls[0], int(sum(driver.values())))
    check("ioctls that failed", ioctls[1], int(sum(v for attrs, v in driver.items() if "error.type" in dict(attrs))))
    return checks


def run(out: Path, wheels: bool = True) -> int:
    if os.geteuid() != 0:
        raise SystemExit("run loads BPF programs: run it as root")
    out.mkdir(parents=True, exist_ok=True)
    if not os.path.isdir("/sys/kernel/tracing/events"):   # a bare machine may not have tracefs mounted
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=False)
    work = Path("/tmp/gpu-device-check")
    shutil.rmtree(work, ignore_errors=True)
    env = unpack(work, wheels)
    facts = {"uname": os.uname().release, "cpus": os.cpu_count(),
             "nvidia-smi": subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
             if shutil.which("nvidia-smi") else "no nvidia-smi"}
    lib = libcudart_of(BUNDLE / "gpucheck", env)
    tracer_proc = start_tracer(env, out, lib, "check")
    try:
        log, ioctls, pid = run_program(env, out, "check", ROUNDS, 1000)
        time.sleep(2.5)   # an interval's export after the program's exit
    finally:
        stop_tracer(tracer_proc)
    summary = json.loads((out / "summary-check.json").read_text())
    checks = compare(log, ioctls, series_totals(out / "metrics-check.jsonl", pid), summary)
    # The cost of a traced call: the program's own timing of COST_CALLS cudaStreamSynchronize on an idle
    # stream, without and under the tracer, alternating.
    without, under = [], []
    for r in range(COST_ROUNDS):
        without.append(run_program(env, out, f"cost-{r}-off", 1, COST_CALLS)[0]["ns_per_call"])
        proc = start_tracer(env, out, lib, f"cost-{r}")
        try:
            under.append(run_program(env, out, f"cost-{r}-on", 1, COST_CALLS)[0]["ns_per_call"])
        finally:
            stop_tracer(proc)
    cost = {"ns_per_call_without": without, "ns_per_call_under_tracer": under,
            "added_ns_per_call_median": statistics.median(u - w for u, w in zip(under, without))}
    report = {"facts": facts, "program": log, "ioctls_counted_by_program": ioctls, "checks": checks, "cost": cost,
              "tracer_summary": summary["tracers"]["gpu"]}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(facts))
    for c in checks:
        print(f"{'ok ' if c['ok'] else 'BAD'} {c['what']}: program {c['program']}, ebpftool {c['ebpftool']}")
    print(f"cost per traced call: {cost['added_ns_per_call_median']:.0f} ns (without {without}, under {under})")
    return 0 if all(c["ok"] for c in checks) else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    sub.add_parser("prepare", help="here: build .gpu-check/")
    r = sub.add_parser("run", help="on the GPU machine: run the check, the report in OUT")
    r.add_argument("out", type=Path)
    r.add_argument("--local", action="store_true",
                   help="with this Python's own packages, not the bundle's wheels (a trial where the bundle was made: "
                        "without a GPU every call fails, and is counted so)")
    t = sub.add_parser("tracer", help="(internal) ebpftool with the bundle's compile-cache keys")
    t.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if a.step == "prepare":
        prepare()
    elif a.step == "run":
        sys.exit(run(a.out, wheels=not a.local))
    else:
        tracer(a.args)


if __name__ == "__main__":
    main()

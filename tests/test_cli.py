"""The command line as users meet it: doctor, privileges, and bad input without tracebacks."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_ebpftool


@pytest.mark.bpf
def test_doctor_probes_the_kernel_and_every_tracer_can_run():
    r = run_ebpftool(["doctor", "--json"])
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    for name in ("bpf() syscall", "ring buffer", "uprobes", "tracefs", "BTF", "JIT", "kernel headers", "capabilities"):
        assert checks[name]["ok"], checks[name]
    # This kernel has no kprobes and refuses fentry: doctor must find that out by trying.
    assert not checks["kprobes"]["ok"]
    assert not checks["fentry"]["ok"]
    assert checks["lockdown"]["detail"] in ("none", "integrity", "no LSM lockdown interface")
    plans = {t["tracer"]: t for t in report["tracers"]}
    assert set(plans) == {"inference", "net", "gpu"}
    assert all(p["can_run"] for p in plans.values())
    assert plans["net"]["method"].startswith("raw sock_send_length/sock_recv_length/tcp_probe"), plans["net"]
    assert plans["inference"]["method"].startswith("socket hooks on BTF tracepoints"), plans["inference"]
    assert checks["BTF tracepoints (tp_btf)"]["ok"] and checks["kfunc bpf_rdonly_cast"]["ok"]
    assert checks["raw tracepoints"]["ok"] and checks["struct sock offsets (BTF)"]["ok"]


@pytest.mark.bpf
def test_doctor_table_is_readable():
    r = run_ebpftool(["doctor"])
    assert r.returncode == 0
    for word in ("ring buffer", "kprobes", "attach method", "inference"):
        assert word in r.stdout


def _as_nobody(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-m", "ebpftool", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "COLUMNS": "200"},
    )


@pytest.mark.root
def test_without_privileges_one_sentence_and_non_zero_exit():
    for cmd in (["inference", "--port", "8080", "--duration", "1"], ["net", "--duration", "1"], ["gpu", "--duration", "1"]):
        r = _as_nobody(cmd)
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert "needs root or the capabilities" in r.stderr


@pytest.mark.root
def test_bad_arguments_are_one_clear_line():
    r = run_ebpftool(["net", "--interval", "-3"])
    assert r.returncode == 2 and "Traceback" not in r.stderr and "interval" in r.stderr.lower()
    r = run_ebpftool(["nosuchcommand"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_ebpftool(["gpu", "--duration", "1", "--otlp-endpoint", "ftp://x"])
    assert r.returncode == 1 and "Traceback" not in r.stderr and "OTLP endpoint" in r.stderr
    r = run_ebpftool(["inference", "--port", "8080", "--duration", "1", "--max-connections", "1000"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["ebpftool: --max-connections 1000: a power of two between 64 and 262144"]
    # `trace` skips a tracer the kernel cannot run, but a wrong option stops it before anything is loaded
    r = run_ebpftool(["trace", "--duration", "1", "--no-ui", "--max-connections", "100"])
    assert r.returncode == 1 and "Traceback" not in r.stderr and "skipped" not in r.stderr
    assert r.stderr.strip().splitlines() == ["ebpftool: --max-connections 100: a power of two between 64 and 262144"]
    r = run_ebpftool(["trace", "--duration", "1", "--no-ui", "--ioctl-path-prefix", "dev/nvidia"])
    assert r.returncode == 1 and "probes attached" not in r.stderr and "--ioctl-path-prefix" in r.stderr


def test_version():
    r = run_ebpftool(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("ebpftool ")

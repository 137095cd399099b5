"""The command line as users meet it: doctor, privileges, and bad input without tracebacks."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import (ROOT, SOCKET_HOOK_TRACEPOINTS, kernel_has_btf, kernel_has_kprobes, kernel_has_tracepoint,
                            run_ebpftool)

NET_TCP_TRACEPOINTS = ("tcp:tcp_probe", "tcp:tcp_retransmit_skb", "tcp:tcp_destroy_sock")


def expected_plans(checks: dict) -> dict:
    """The attach method (its leading words) each tracer should get, from what this kernel offers: tracepoints
    and kprobes probed here; what only a load can tell (tp_btf, the kfunc, raw tracepoints) as doctor found it."""
    def ok(name):
        return checks[name]["ok"]

    has = kernel_has_tracepoint
    raw_regs = ok("raw tracepoints") and platform.machine() == "x86_64"   # the socket hooks read x86-64 registers
    if all(has(tp) for tp in ("sock:sock_recv_length", "sock:inet_sock_set_state")) and raw_regs and ok("BTF tracepoints (tp_btf)"):
        inference = ("socket hooks on BTF tracepoints" if ok("kfunc bpf_rdonly_cast")
                     else "socket hooks: raw sock_recv_length + inet_sock_set_state, writes on the tcp_sendmsg_locked")
    elif all(has(tp) for tp in SOCKET_HOOK_TRACEPOINTS) and raw_regs:
        inference = "socket hooks: raw sock_recv_length/sock_send_length"
    else:
        inference = "syscall hooks"
    if all(has(tp) for tp in SOCKET_HOOK_TRACEPOINTS):
        if all(has(tp) for tp in NET_TCP_TRACEPOINTS):
            net = "raw sock_send_length" if ok("raw tracepoints") and ok("struct sock offsets (BTF)") else "sock/tcp tracepoints"
        else:
            net = "sock tracepoints (bytes only)"
    else:   # before Linux 6.3: kprobes on the protocols' sendmsg/recvmsg, if the kernel has them
        net = "kprobes on" if ok("kprobes") and ok("struct sock offsets (BTF)") else None
    agents = "uprobes on OpenSSL's" if ok("uprobes") and ok("ring buffer") else None
    return {"inference": inference, "net": net, "gpu": "uprobes + ioctl tracepoints", "agents": agents}


@pytest.mark.bpf
def test_doctor_probes_the_kernel_and_plans_what_it_offers():
    r = run_ebpftool(["doctor", "--json"])
    report = json.loads(r.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    # What the test suite itself needs to run at all.
    for name in ("bpf() syscall", "ring buffer", "uprobes", "tracefs", "JIT", "kernel headers", "capabilities"):
        assert checks[name]["ok"], checks[name]
    # Doctor finds out by trying; where the kernel says so without a load, both must agree.
    assert checks["BTF"]["ok"] == kernel_has_btf()
    assert checks["kprobes"]["ok"] == kernel_has_kprobes(), checks["kprobes"]
    assert checks["struct sock offsets (BTF)"]["ok"] == kernel_has_btf(), checks["struct sock offsets (BTF)"]
    if checks["kfunc bpf_rdonly_cast"]["ok"]:
        assert checks["BTF tracepoints (tp_btf)"]["ok"]
    if checks["BTF tracepoints (tp_btf)"]["ok"]:
        assert kernel_has_btf()
    if not checks["fentry"]["ok"]:   # no tracer needs fentry: only reported, with the kernel's refusal
        assert checks["fentry"]["detail"].startswith("refused: ")
    assert checks["lockdown"]["detail"] in ("none", "integrity", "confidentiality", "no LSM lockdown interface")

    plans = {t["tracer"]: t for t in report["tracers"]}
    assert set(plans) == {"inference", "net", "gpu", "agents"}
    for tracer, method in expected_plans(checks).items():
        if method is None:
            assert not plans[tracer]["can_run"], plans[tracer]
        else:
            assert plans[tracer]["can_run"] and plans[tracer]["method"].startswith(method), (method, plans[tracer])
    assert r.returncode == (0 if all(p["can_run"] for p in plans.values()) else 1), r.stdout + r.stderr


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


def test_the_command_list_gives_each_summary_as_flowing_text():
    """Each command's summary in `ebpftool --help` wraps at the terminal's width, not where the docstring broke."""
    r = run_ebpftool(["--help"], env={"COLUMNS": "400"})
    assert r.returncode == 0
    rows = [line for line in r.stdout.splitlines() if line.startswith("│ ")]
    inference = [i for i, line in enumerate(rows) if line.split()[1:2] == ["inference"]]
    assert inference, r.stdout
    assert "time per output token (gRPC: time to first message)." in rows[inference[0]], r.stdout

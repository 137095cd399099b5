"""Attach plans: one list per tracer, walked by its start() and by doctor; the plan follows what the kernel offers."""
from __future__ import annotations

import pytest

from ebpftool.core.plan import usable
from ebpftool.doctor import TRACER_PLANS
from ebpftool.tracers import gpu, inference, net
from ebpftool.tracers.agents import plans as agents_plans
from ebpftool.tracers.inference import plans as inference_plans
from ebpftool.tracers.net import plans as net_plans

ALL_FEATURES = {"raw_tp_regs": True, "tp_btf": True, "kfunc_rdonly_cast": True, "raw_tp": True,
                "btf_sock_offsets": True, "kprobe": True, "uprobe": True}


def every_tracepoint(_tp: str) -> bool:
    return True


def test_doctor_walks_the_tracers_own_plan_lists():
    assert TRACER_PLANS == {"inference": inference.PLANS, "net": net.PLANS, "gpu": gpu.PLANS, "agents": agents_plans.PLANS}
    for plans in TRACER_PLANS.values():
        assert len({p.description for p in plans}) == len(plans)  # doctor tells them apart


@pytest.mark.parametrize("missing, expected", [
    ((), inference_plans.SOCKET_BTF),
    (("kfunc_rdonly_cast",), inference_plans.SOCKET_BTF_SEND),      # before Linux 6.2
    (("tp_btf",), inference_plans.SOCKET_RAW),                       # tp_btf refused (e.g. by a lockdown)
    (("raw_tp_regs",), inference_plans.SYSCALL),                     # not x86-64
])
def test_inference_takes_the_best_plan_the_kernel_features_allow(missing, expected):
    features = {**ALL_FEATURES, **{f: False for f in missing}}
    ok, why_not = usable(inference_plans.PLANS, features, every_tracepoint)
    assert ok[0] is expected
    assert len(why_not) == inference_plans.PLANS.index(expected)
    assert all(any(f in line for f in missing) for line in why_not), why_not


def test_inference_without_socket_tracepoints_takes_the_syscall_hooks():
    ok, why_not = usable(inference_plans.PLANS, ALL_FEATURES, lambda tp: not tp.startswith("sock:"))
    assert ok == [inference_plans.SYSCALL]
    assert all("sock:sock_recv_length" in line for line in why_not), why_not


def test_hooks_option_limits_the_plans():
    choices = inference_plans.HOOK_CHOICES
    assert choices["auto"] == inference_plans.PLANS
    assert inference_plans.SYSCALL not in choices["socket"]
    assert choices["socket-raw"] == (inference_plans.SOCKET_RAW,)
    assert choices["syscall"] == (inference_plans.SYSCALL,)


@pytest.mark.parametrize("features, exists, expected", [
    (ALL_FEATURES, every_tracepoint, net_plans.RAW),
    ({**ALL_FEATURES, "btf_sock_offsets": False}, every_tracepoint, net_plans.TRACEPOINTS),
    ({**ALL_FEATURES, "raw_tp": False}, every_tracepoint, net_plans.TRACEPOINTS),
    (ALL_FEATURES, lambda tp: tp not in net_plans.IO_TRACEPOINTS, net_plans.KPROBES),    # before Linux 6.3
])
def test_net_takes_the_best_plan_the_kernel_allows(features, exists, expected):
    ok, _why_not = usable(net_plans.PLANS, features, exists)
    assert ok[0] is expected


def test_net_without_kprobes_or_socket_tracepoints_has_no_plan():
    ok, why_not = usable(net_plans.PLANS, {**ALL_FEATURES, "kprobe": False},
                         lambda tp: tp not in net_plans.IO_TRACEPOINTS)
    assert ok == [] and len(why_not) == len(net_plans.PLANS)


def test_an_unprobed_feature_counts_as_present_only_when_asked():
    plan = gpu.PLANS[0]
    assert plan.missing({}, every_tracepoint) == ["feature uprobe"]
    assert plan.missing({}, every_tracepoint, unknown_ok=True) == []
    assert plan.present(every_tracepoint) == list(plan.tracepoints)


@pytest.mark.bpf
def test_doctor_says_a_tracepoint_the_kernel_lacks_as_such(monkeypatch):
    """As on Linux 6.1 (before sock_recv_length and tcp_sendmsg_locked): the rows say the tracepoints are
    absent, not BCC's attach error, and the check that needs them says it was not tried."""
    from ebpftool.core.bpf import import_bcc
    from ebpftool.doctor import probe_kernel

    bpf = import_bcc().BPF
    exists = bpf.tracepoint_exists
    hidden = {("sock", "sock_recv_length"), ("tcp", "tcp_sendmsg_locked")}
    monkeypatch.setattr(bpf, "tracepoint_exists", staticmethod(lambda c, e: (c, e) not in hidden and exists(c, e)))
    checks = {c.name: (c.ok, c.detail) for c in probe_kernel().checks}
    assert checks["raw tracepoints"] == (
        False, "this kernel has no sock:sock_recv_length tracepoint (inference: the syscall hooks)")
    assert checks["BTF tracepoints (tp_btf)"] == (False, "this kernel has no tcp:tcp_sendmsg_locked tracepoint")
    assert checks["kfunc bpf_rdonly_cast"] == (False, "not tried: needs the BTF tracepoint above")

"""`ebpftool doctor`: what this kernel allows, found by trying it, and what each tracer will use.

Every "yes" below comes from an attempt (a program loaded, a probe attached and
detached), not from a version number.
"""
from __future__ import annotations

import contextlib
import os
import sys
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ebpftool.core import bcc_lib
from ebpftool.core.bpf import (
    TRACEFS_PATHS,
    attach_raw_tracepoint_program,
    import_bcc,
    load_btf_raw_tracepoint_program,
)
from ebpftool.core.bpf_cache import ENV, BpfCache
from ebpftool.core.btf import BtfError, sock_field_offsets
from ebpftool.core.privileges import bpf_refusal_hint, capability_report, has_privileges, missing_privileges
from ebpftool.errors import EbpftoolError
from ebpftool.core.plan import Plan, usable
from ebpftool.tracers.agents import go_tls
from ebpftool.tracers.agents.plans import PLANS as AGENTS_PLANS
from ebpftool.tracers.gpu.plans import PLANS as GPU_PLANS
from ebpftool.tracers.inference.plans import PLANS as INFERENCE_PLANS
from ebpftool.tracers.inference.plans import RECV_BTF_TRACEPOINT, SEND_BTF_TRACEPOINT, recv_hook_btf_defines
from ebpftool.tracers.inference.tls_libs import tls_library_candidates
from ebpftool.tracers.net.plans import PLANS as NET_PLANS

# Each tracer's attach plans, in its order of preference: the same lists its start() walks.
TRACER_PLANS: dict[str, tuple[Plan, ...]] = {"inference": INFERENCE_PLANS, "net": NET_PLANS, "gpu": GPU_PLANS,
                                              "agents": AGENTS_PLANS}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class TracerPlan:
    tracer: str
    can_run: bool
    method: str
    detail: str = ""


@dataclass
class Report:
    kernel: str
    checks: list[Check] = field(default_factory=list)
    tracers: list[TracerPlan] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.can_run for t in self.tracers)

    def to_dict(self) -> dict:
        return {"kernel": self.kernel, "ok": self.ok, "checks": [asdict(c) for c in self.checks],
                "tracers": [asdict(t) for t in self.tracers]}


def find_tracefs(mount: bool = True) -> str | None:
    """The tracefs directory, mounting it when it is absent (as the tracers need it)."""
    for path in TRACEFS_PATHS:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    if mount:
        os.system("mount -t tracefs nodev /sys/kernel/tracing >/dev/null 2>&1")
        if os.path.isdir("/sys/kernel/tracing/events"):
            return "/sys/kernel/tracing"
    return None


def kernel_headers() -> Check:
    build = Path(f"/lib/modules/{platform.release()}/build")
    if build.exists():
        target = build.resolve()
        fallback = platform.release() not in target.name
        how = f"linked from {target} (another version: types only, no struct offsets)" if fallback else str(target)
        return Check("kernel headers", True, how)
    if Path("/sys/kernel/kheaders.tar.xz").exists():
        return Check("kernel headers", True, "from the kernel (CONFIG_IKHEADERS)")
    return Check("kernel headers", False, f"none at {build}; run scripts/install.sh")


def lockdown() -> Check:
    path = Path("/sys/kernel/security/lockdown")
    if not path.exists():
        os.system("mount -t securityfs none /sys/kernel/security >/dev/null 2>&1")
    try:
        text = path.read_text().strip()
    except OSError:
        return Check("lockdown", True, "no LSM lockdown interface")
    mode = text[text.index("[") + 1:text.index("]")] if "[" in text else text
    return Check("lockdown", mode != "confidentiality", mode)


_PROBE_C = r"""
BPF_RINGBUF_OUTPUT(doctor_events, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u32 *e = doctor_events.ringbuf_reserve(sizeof(u32));
    if (e) { *e = 1; doctor_events.ringbuf_submit(e, 0); }
    return 0;
}
int doctor_uprobe(struct pt_regs *ctx) { return 0; }
int doctor_kprobe(struct pt_regs *ctx) { return 0; }
"""

# The inference tracer's socket hooks: a raw tracepoint reading the task's syscall registers.
_RAW_TP_C = r"""
#include <asm/ptrace.h>
RAW_TRACEPOINT_PROBE(sock_recv_length) {
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    return regs->orig_ax == 0;  /* a direct load through the BTF pointer, as the tracer does */
}
"""

# The inference tracer's BTF send hook (loaded by ebpftool itself: BCC 0.26 cannot).
_TP_BTF_C = r"""
int doctor_tp_btf(u64 *ctx) { return 0; }
"""

# The inference tracer's BTF read hook: the bpf_rdonly_cast kfunc, called as the tracer calls it (a
# placeholder helper number that ebpftool.core.bpf rewrites at load).
_RDONLY_CAST_C = r"""
static void *(*rdonly_cast)(u64 obj, u32 btf_id) = (void *)KFUNC_RDONLY_CAST;
int doctor_rdonly_cast(u64 *ctx) { return rdonly_cast(0, TCP_SOCK_BTF_ID) != 0; }
"""

_KFUNC_C = r"""
KFUNC_PROBE(vfs_read) { return 0; }
"""


@contextlib.contextmanager
def quiet_stderr():
    """libbcc prints the kernel's refusals on fd 2; doctor reports them itself."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _attempt(fn) -> tuple[bool, str]:
    try:
        with quiet_stderr():
            detail = fn()
        return True, detail or "works"
    except Exception as exc:  # the kernel's refusal is the answer we are after
        return False, _short(exc)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:120]


def probe_kernel() -> Report:
    """Run every check; never raises for what the kernel refuses."""
    report = Report(kernel=platform.release())
    add = report.checks.append
    caps = capability_report()
    privileged = has_privileges(caps)
    add(Check("capabilities", privileged, ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in caps.items())))
    tracefs = None
    if privileged:
        tracefs = find_tracefs()
        add(Check("tracefs", tracefs is not None, tracefs or "not mounted and could not be mounted"))
    add(Check("BTF", Path("/sys/kernel/btf/vmlinux").exists(), "/sys/kernel/btf/vmlinux"))
    try:
        jit = Path("/proc/sys/net/core/bpf_jit_enable").read_text().strip()
        add(Check("JIT", jit != "0", f"bpf_jit_enable={jit}"))
    except OSError:
        add(Check("JIT", False, "unknown"))
    headers = kernel_headers()
    add(headers)
    cache = BpfCache.from_env()
    add(Check("compile cache", *(cache.status() if cache else (True, f"off ({ENV}=off): every start compiles"))))
    add(lockdown())
    if not privileged:
        # Without privileges tracefs is unreadable and every BPF load is refused for that reason alone:
        # say so, instead of what it looks like ("tracefs not mounted", "failed to compile"), and plan nothing.
        add(Check("privileges", False, f"privileges missing ({missing_privileges(caps)}): run doctor as root, or "
                                       f"with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN, to probe tracefs and BPF"))
        report.tracers = [TracerPlan(t, False, "none", "privileges missing: ebpftool needs root or CAP_BPF, "
                                                       "CAP_PERFMON and CAP_SYS_ADMIN") for t in TRACER_PLANS]
        return report

    features: dict[str, bool] = {}
    try:
        bcc = import_bcc(compiler=True)
    except EbpftoolError as exc:
        add(Check("BCC", False, str(exc)))
        bcc = None
    if bcc is not None:
        add(Check("BCC", True, getattr(bcc, "__version__", "present")))
        runtime = bcc_lib.runtime_libraries_found()
        add(Check("BCC runtime library", runtime,
                  f"{', '.join(bcc_lib.RUNTIME_LIBRARIES)}: tracers run without LLVM in memory (compiles run in "
                  "child processes)" if runtime else
                  f"{bcc_lib.RUNTIME_LIBRARIES[0]} not found: tracers load libbcc.so.0, LLVM and clang with it"))
        prog = None
        try:
            with quiet_stderr():
                prog = bcc.BPF(text=_PROBE_C)
            features["bpf"] = True
            add(Check("bpf() syscall", True, "tracepoint program loaded"))
        except Exception as exc:
            features["bpf"] = False
            add(Check("bpf() syscall", False, _short(exc) + bpf_refusal_hint(caps)))
        if prog is not None:
            def ringbuf():
                got = []
                prog["doctor_events"].open_ring_buffer(lambda _c, _d, _s: got.append(1))
                os.getppid()
                prog.ring_buffer_poll(100)
                if not got:
                    raise RuntimeError("no record arrived")
                return "a record arrived"

            ok, detail = _attempt(ringbuf)
            features["ringbuf"] = ok
            add(Check("ring buffer", ok, detail))

            def uprobe():
                prog.attach_uprobe(name="c", sym="getpid", fn_name="doctor_uprobe")
                prog.detach_uprobe(name="c", sym="getpid")
                return "attached to libc:getpid"

            ok, detail = _attempt(uprobe)
            features["uprobe"] = ok
            add(Check("uprobes", ok, detail))

            def kprobe():
                prog.attach_kprobe(event="vfs_read", fn_name="doctor_kprobe")
                prog.detach_kprobe(event="vfs_read")
                return "attached to vfs_read"

            ok, detail = _attempt(kprobe)
            features["kprobe"] = ok
            if not ok and tracefs and not os.path.exists(os.path.join(tracefs, "kprobe_events")):
                detail = "kernel has no kprobe_events (built without CONFIG_KPROBES)"
            add(Check("kprobes", ok, detail))
            prog.cleanup()

        def fentry():
            b = bcc.BPF(text=_KFUNC_C)
            b.cleanup()
            return "fentry on vfs_read loaded"

        def lacking(category: str, event: str) -> str:
            """What to say where the kernel has no such tracepoint (older kernels), instead of BCC's attach error
            ("" where it has it, or tracefs cannot tell)."""
            if tracefs is None or bcc.BPF.tracepoint_exists(category, event):
                return ""
            return f"this kernel has no {category}:{event} tracepoint"

        def raw_tracepoint():
            b = bcc.BPF(text=_RAW_TP_C)
            b.cleanup()
            return "raw sock_recv_length with the task's syscall registers loaded"

        if features.get("bpf"):
            why_not = lacking("sock", "sock_recv_length")
            ok, detail = (False, f"{why_not} (inference: the syscall hooks)") if why_not else _attempt(raw_tracepoint)
            features["raw_tp"] = features["raw_tp_regs"] = ok
            if ok and platform.machine() != "x86_64":
                features["raw_tp_regs"] = False
                detail += f" (the inference socket hooks read x86-64 registers; this is {platform.machine()})"
            add(Check("raw tracepoints", ok, detail))
        try:
            offsets = sock_field_offsets()
            features["btf_sock_offsets"] = True
            add(Check("struct sock offsets (BTF)", True,
                      ", ".join(f"{k.lower().replace('_offset', '')}={v}" for k, v in offsets.items())))
        except BtfError as exc:
            features["btf_sock_offsets"] = False
            add(Check("struct sock offsets (BTF)", False, str(exc)))

        def load_tp_btf(text: str, fn_name: str, tracepoint: str, attach: bool, defines=None) -> None:
            """Compile text with BCC and load fn_name as a tp_btf program (attached and detached if asked)."""
            b = bcc.BPF(text=text, cflags=[f"-D{k}={v}" for k, v in (defines or {}).items()])
            try:
                fd = load_btf_raw_tracepoint_program(b, fn_name, tracepoint)
                if attach:
                    os.close(attach_raw_tracepoint_program(fd))
                os.close(fd)
            finally:
                b.cleanup()

        def btf_tracepoint():
            load_tp_btf(_TP_BTF_C, "doctor_tp_btf", SEND_BTF_TRACEPOINT, attach=True)
            return f"a program on {SEND_BTF_TRACEPOINT} loaded and attached"

        if features.get("bpf"):
            why_not = lacking("tcp", SEND_BTF_TRACEPOINT)
            ok, detail = (False, why_not) if why_not else _attempt(btf_tracepoint)
            features["tp_btf"] = ok
            add(Check("BTF tracepoints (tp_btf)", ok, detail if ok or why_not else f"refused: {detail}"))

            def rdonly_cast():
                load_tp_btf(_RDONLY_CAST_C, "doctor_rdonly_cast", RECV_BTF_TRACEPOINT, attach=False,
                            defines=recv_hook_btf_defines())
                return "bpf_rdonly_cast() called from a tp_btf program (the BTF read hook's clock and registers)"

            ok, detail = _attempt(rdonly_cast) if features["tp_btf"] else (False, "")
            features["kfunc_rdonly_cast"] = ok
            add(Check("kfunc bpf_rdonly_cast", ok, detail if ok else f"refused: {detail}" if detail
                      else "not tried: needs the BTF tracepoint above"))
            ok, detail = _attempt(fentry)
            features["fentry"] = ok
            add(Check("fentry", ok, detail if ok else f"refused: {detail}"))

    for tracer, plans in TRACER_PLANS.items():
        report.tracers.append(plan_tracer(tracer, plans, features, bcc, headers.ok))
    for check in inference_ways_in(features):
        add(check)
    add(agents_go_tls(features))
    return report


def inference_ways_in(features: dict[str, bool]) -> list[Check]:
    """The inference tracer's ways in beside the socket or syscall hooks, and what each needs."""
    uprobes = bool(features.get("uprobe"))
    found = tls_library_candidates() if uprobes else []
    tls = Check("inference: TLS (OpenSSL)", uprobes,
                (f"uprobes on SSL_read/SSL_write (and _ex) of every libssl a process maps, and of executables "
                 f"that export OpenSSL (Node.js); {len(found)} found now" if uprobes
                 else "needs uprobes: TLS connections are counted, not parsed"))
    h2 = Check("inference: HTTP/2 and gRPC", bool(features.get("ringbuf")),
               "a connection that begins with the client preface (h2c, or h2 inside TLS through the TLS "
               "uprobes) or takes an h2c Upgrade: frames walked in the kernel, headers (HPACK) decoded in user "
               "space, streams measured in the kernel when user space falls behind"
               if features.get("ringbuf") else "needs BPF ring buffers")
    return [tls, h2]


def agents_go_tls(features: dict[str, bool]) -> Check:
    """The agents tracer's way into Go's own TLS (no libssl), and what it needs."""
    why_not = "needs uprobes" if not features.get("uprobe") else go_tls.supported()
    return Check("agents: TLS (Go's crypto/tls)", why_not is None,
                 "uprobes on crypto/tls.(*Conn).Write, Read (its ret instructions) and Close of every running Go "
                 "executable with a symbol table" if why_not is None else f"{why_not}: Go clients' TLS calls are not seen")


def plan_tracer(tracer: str, plans: tuple[Plan, ...], features: dict[str, bool], bcc, headers_ok: bool) -> TracerPlan:
    if not features.get("bpf"):
        return TracerPlan(tracer, False, "none", "BPF programs cannot be loaded")
    if not headers_ok:
        return TracerPlan(tracer, False, "none", "BCC needs kernel headers")
    if tracer in ("inference", "net") and not features.get("ringbuf"):
        return TracerPlan(tracer, False, "none", "BPF ring buffers do not work")
    if tracer == "gpu" and not features.get("uprobe"):
        return TracerPlan(tracer, False, "none", "uprobes cannot be attached")

    def exists(tp: str) -> bool:
        return bool(bcc.BPF.tracepoint_exists(*tp.split(":", 1)))

    ok, why_not = usable(plans, features, exists)
    if not ok:
        return TracerPlan(tracer, False, "none", "; ".join(why_not))
    return TracerPlan(tracer, True, ok[0].description, f"{len(ok[0].present(exists))} tracepoints present")

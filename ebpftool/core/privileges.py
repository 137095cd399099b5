"""Does this process hold what loading BPF programs needs? Asked of the kernel, not guessed."""
from __future__ import annotations

import os

from ebpftool.errors import EbpftoolError

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_caps(status_path: str = "/proc/self/status") -> int:
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def capability_report() -> dict[str, bool]:
    caps = effective_caps()
    return {
        "CAP_BPF": bool(caps >> CAP_BPF & 1),
        "CAP_PERFMON": bool(caps >> CAP_PERFMON & 1),
        "CAP_SYS_ADMIN": bool(caps >> CAP_SYS_ADMIN & 1),
    }


def seccomp_mode(status_path: str = "/proc/self/status") -> int:
    """0 none, 1 strict, 2 a filter (a container runtime's default profile)."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def bpf_refusal_hint(caps: dict[str, bool] | None = None, status_path: str = "/proc/self/status") -> str:
    """Why bpf() may be refused although CAP_BPF is held: a seccomp filter. Container runtimes' default profiles
    (podman 4.3's, measured by scripts/test-image.sh) allow bpf() only with CAP_SYS_ADMIN, and the refusal
    (EPERM at the first map) reads like a compile failure. '' where that is not the case."""
    caps = capability_report() if caps is None else caps
    if caps["CAP_SYS_ADMIN"] or seccomp_mode(status_path) != 2:
        return ""
    return ("; a seccomp filter is on and CAP_SYS_ADMIN is not held: a runtime's default seccomp profile allows "
            "bpf() only with CAP_SYS_ADMIN: add it, or run with seccomp unconfined (or a profile allowing bpf)")


def has_privileges(caps: dict[str, bool] | None = None) -> bool:
    """Can this process load BPF programs and attach probes?"""
    caps = capability_report() if caps is None else caps
    # Tracepoints and uprobes need CAP_BPF + CAP_PERFMON (5.8+) or CAP_SYS_ADMIN;
    # BCC's attach through tracefs needs CAP_SYS_ADMIN in practice.
    return caps["CAP_SYS_ADMIN"] or (caps["CAP_BPF"] and caps["CAP_PERFMON"])


def missing_privileges(caps: dict[str, bool] | None = None) -> str:
    """Who this process runs as and which capabilities it lacks, in words."""
    caps = capability_report() if caps is None else caps
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    missing = [k for k, v in caps.items() if not v]
    return f"running as {who}, missing {', '.join(missing) or 'nothing'}"


def require_privileges() -> None:
    """Raise one clear sentence unless BPF programs and probes can be loaded."""
    caps = capability_report()
    if has_privileges(caps):
        return
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    missing = [k for k, v in caps.items() if not v]
    raise EbpftoolError(
        f"ebpftool needs root or the capabilities CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN to load BPF programs "
        f"(running as {who}, missing {', '.join(missing)}): run it with sudo or in a privileged container"
    )

"""How the gpu tracer hooks into the kernel: one plan, uprobes on the CUDA libraries' functions (attached
as libraries are found) and the syscall tracepoints that follow the NVIDIA device files and their ioctls."""
from __future__ import annotations

from ebpftool.core.plan import Plan

# Attached by BCC itself when the program loads (TRACEPOINT_PROBE).
TRACEPOINTS = ("syscalls:sys_enter_openat", "syscalls:sys_exit_openat", "syscalls:sys_enter_close",
               "syscalls:sys_enter_ioctl", "syscalls:sys_exit_ioctl")
# With --pid: the watched process tree grows at each fork.
FORK_TRACEPOINT = "sched:sched_process_fork"

UPROBES = Plan("uprobes", "uprobes + ioctl tracepoints", TRACEPOINTS, ("uprobe",))
PLANS = (UPROBES,)

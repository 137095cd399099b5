/* Test fixture for the core: one event per getppid() of TARGET_PID, through
 * the span budget and the ring buffer, plus a uprobe that counts calls.
 * TRACEPOINT_PART / UPROBE_PART (both 1 by default): which of the two programs
 * the text defines (a program compiled in parts, ebpftool.core.bpf). */
#include "core_probe.h"

#ifndef TRACEPOINT_PART
#define TRACEPOINT_PART 1
#endif
#ifndef UPROBE_PART
#define UPROBE_PART 1
#endif

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(seq, u32, 1);
BPF_ARRAY(uprobe_calls, u64, 1);

#if TRACEPOINT_PART
TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != TARGET_PID)
        return 0;
    u32 zero = 0;
    u32 *s = seq.lookup(&zero);
    if (!s)
        return 0;
    u32 n = (*s)++;  /* one thread calls: no atomic needed */
    u64 now = bpf_ktime_get_ns();
    if (!span_budget_take(now))
        return 0;
    struct probe_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_ringbuf_full();
        return 0;
    }
    e->pid = pid;
    e->seq = n;
    e->ts_ns = now;
    __builtin_memcpy(e->tag, "core-ok", 8);
    events.ringbuf_submit(e, 0);
    return 0;
}
#endif

#if UPROBE_PART
int count_uprobe(struct pt_regs *ctx)
{
    u32 zero = 0;
    u64 *v = uprobe_calls.lookup(&zero);
    if (v)
        __sync_fetch_and_add(v, 1);
    return 0;
}
#endif

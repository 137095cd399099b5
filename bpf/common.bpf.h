/* Shared by every ebpftool BPF program; the loader puts it in front of each
 * program's source (BCC rewrites map method calls only in the main text, so
 * this is not #included).
 *
 * Provides:
 *  - stats: a per-CPU array of counters. Slots below STAT_TRACER_BASE are the
 *    core's (ring-buffer drops, span budget refusals); tracers use the rest.
 *  - span_budget_take(): an in-kernel rate limit (SPAN_RATE_PER_CPU per second,
 *    bursts of SPAN_BURST, per CPU) that bounds spans sent to user space, divided
 *    by 2^span_shift[0] while user space thins spans (its own CPU over --max-cpu).
 *  - struct hist_value: count, sum and buckets of one histogram series.
 *  - __always_inline without debug info of its own (nodebug): the compile's time and memory.
 *  - CURRENT_SYSCALL_REGS() and x86-64 syscall numbers, for programs that run
 *    inside a socket call and need its user-space arguments; the recv() flags
 *    whose bytes are not taken from the stream (RECV_NOT_FROM_STREAM).
 *
 * Compile-time parameters (-D from the loader): SPAN_RATE_PER_CPU, SPAN_BURST.
 */
#ifndef SPAN_RATE_PER_CPU
#define SPAN_RATE_PER_CPU 1000
#endif
#ifndef SPAN_BURST
#define SPAN_BURST 1000
#endif

#define NSEC_PER_SEC 1000000000ULL

/* Helpers are inlined into the hooks, and with debug info (which BCC compiles for the maps' BTF) every inlined
 * copy carries its variables' locations through LLVM's passes: most of the compile's memory beyond clang's own,
 * and time. Without debug info of their own (nodebug) the instructions are the same, the maps keep their types,
 * and a verifier log names the hook's lines, not the helper's (docs/performance.md, start-up). The kernel's
 * headers, which BCC includes first, defined __always_inline already. */
#ifdef __always_inline
#undef __always_inline
#endif
#define __always_inline inline __attribute__((__always_inline__, nodebug))

/* bpf_probe_read_user() and bpf_probe_read_user_str() under other names. BCC 0.26 checks, at every call it
 * compiles by those names, whether the kernel has them by reading all of /proc/kallsyms into a new symbol
 * table: ~50 ms per call site here, most of a compile (docs/performance.md). The helpers are the same. */
static long (*read_user)(void *dst, u32 size, const void *unsafe_ptr) = (void *)BPF_FUNC_probe_read_user;
static long (*read_user_str)(void *dst, u32 size, const void *unsafe_ptr) = (void *)BPF_FUNC_probe_read_user_str;

/* Address families as the kernel numbers them (AF_INET, AF_INET6). */
#define FAMILY_INET 2
#define FAMILY_INET6 10

/* Fibonacci hashing: x times 2^64 / the golden ratio, its top `bits` bits (an index into a table of
 * 1 << bits slots); neighbouring addresses and keys land far apart. */
#define FIBONACCI_HASH(x, bits) (((u64)(x) * 0x9E3779B97F4A7C15ULL) >> (64 - (bits)))

enum ebpftool_stat {
    STAT_RINGBUF_FULL = 0,   /* an event was lost: the ring buffer was full */
    STAT_SPAN_BUDGET = 1,    /* a span was not sent: over the span budget */
    STAT_TRACER_BASE = 2,    /* first slot a tracer may use */
    STAT_SLOTS = 16,
};

BPF_PERCPU_ARRAY(stats, u64, STAT_SLOTS);

static __always_inline void stat_add(u32 slot, u64 n)
{
    u64 *v = stats.lookup(&slot);
    if (v)
        *v += n;
}

/* The span budget as a virtual schedule (GCRA, the token bucket's equivalent): span n of a CPU is due at
 * `due` (one SPAN_INTERVAL_NS after the previous one) and may go up to SPAN_BURST - 1 intervals early.
 * Every request passes here, so no division: the interval is a compile-time constant. */
struct span_schedule {
    u64 due;   /* when the next span is due; 0: none sent yet */
};
BPF_PERCPU_ARRAY(span_budget, struct span_schedule, 1);
/* Set by user space (ebpftool/core/cpu_budget.py): spans are due 2^shift intervals apart while the tracer's
 * own CPU is over its share; the burst lasts as long (SPAN_BURST intervals of the full rate), of fewer spans. */
BPF_ARRAY(span_shift, u32, 1);
#define SPAN_INTERVAL_NS (SPAN_RATE_PER_CPU ? NSEC_PER_SEC / SPAN_RATE_PER_CPU : 0)
#define SPAN_EARLY_NS ((SPAN_BURST > 1 ? SPAN_BURST - 1 : 0) * SPAN_INTERVAL_NS)

/* Returns 1 when a span may be sent now, 0 (and counts it) when over budget.
 * now may be older than the schedule's last span (a caller passing an event's own earlier time): it
 * is judged against the schedule as it stands, never a wrapped-around amount. */
static __always_inline int span_budget_take(u64 now)
{
    u32 zero = 0;
    struct span_schedule *b = span_budget.lookup(&zero);
    if (!b || SPAN_RATE_PER_CPU == 0)
        goto refused;
    u64 due = b->due;
    if (due > now + SPAN_EARLY_NS)
        goto refused;
    u32 *shift = span_shift.lookup(&zero);
    u32 s = shift ? (*shift & 31) : 0;
    b->due = (due > now ? due : now) + (SPAN_INTERVAL_NS << s);
    return 1;
refused:
    stat_add(STAT_SPAN_BUDGET, 1);
    return 0;
}

/* Histograms: the loader generates, for each set of exported bucket bounds,
 * a macro NAME_BUCKET(ns) giving the index of the first bound >= ns (or the
 * overflow index): OpenTelemetry's explicit-bucket rule (upper bound
 * inclusive), so kernel counts become data points without re-bucketing. */
#define HIST_MAX_BUCKETS 24  /* bounds + 1 overflow bucket fit in this */

struct hist_value {
    u64 count;
    u64 sum;
    u64 min;
    u64 max;
    u64 buckets[HIST_MAX_BUCKETS];
};

/* Add one observation to a histogram series (per-CPU value: no atomics). */
static __always_inline void hist_add(struct hist_value *h, u32 bucket, u64 value)
{
    if (h->count == 0 || value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
    h->count++;
    h->sum += value;
    if (bucket < HIST_MAX_BUCKETS)
        h->buckets[bucket]++;
}

/* Ring-buffer wakeups: a record is submitted without waking user space until
 * about 1/RINGBUF_WAKEUP_DIVISOR of the ring was written since the last wakeup;
 * user space drains the rest on its poll timeout (ebpftool/core/bpf.py). A
 * wakeup per record made the reader switch in ~1,300 times a second under the
 * default span budget, on the cores the traced server needs. (BCC 0.26 has no
 * ringbuf_query(), so the bytes are counted here.) Use as
 *    events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES)); */
#define RINGBUF_WAKEUP_DIVISOR 32

BPF_ARRAY(ringbuf_unannounced, u64, 1);  /* bytes submitted since the last wakeup */

static __always_inline u64 ringbuf_wakeup_flags(u64 size, u64 ring_pages)
{
    u32 zero = 0;
    u64 *pending = ringbuf_unannounced.lookup(&zero);
    if (!pending)
        return 0;
    /* A plain atomic add (no fetch: kernels before 5.12 lack it) and a racy
     * read: two CPUs may both wake the reader, which is harmless. */
    __sync_fetch_and_add(pending, size);
    if (*pending < ring_pages * 4096 / RINGBUF_WAKEUP_DIVISOR)
        return BPF_RB_NO_WAKEUP;
    *pending = 0;
    return BPF_RB_FORCE_WAKEUP;
}

/* Call when ringbuf_reserve() returned NULL: the event is lost, and counted.
 * (BCC cannot rewrite map calls inside a macro, so each program writes
 *    e = events.ringbuf_reserve(sizeof(*e)); if (!e) { count_ringbuf_full(); ... }) */
static __always_inline void count_ringbuf_full(void)
{
    stat_add(STAT_RINGBUF_FULL, 1);
}

/* The registers the current task entered its syscall with (x86-64: the
 * number in orig_ax, arguments in di, si, dx, r10, r8, r9). A BTF pointer:
 * its fields are loaded directly (a fault reads as 0), no probe-read call.
 * A macro: struct pt_regs is declared by the program's own includes. */
#define CURRENT_SYSCALL_REGS() ((struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf()))
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47

/* recv() flags whose bytes are not (or not yet) taken from the stream: a peek
 * is read again later, the error queue holds the socket's own timestamps and
 * errors. The socket tracepoints report their ret like any read's. */
#define MSG_PEEK 0x2
#define MSG_ERRQUEUE 0x2000
#define RECV_NOT_FROM_STREAM (MSG_PEEK | MSG_ERRQUEUE)

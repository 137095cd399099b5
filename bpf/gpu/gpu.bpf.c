/* ebpftool gpu: CUDA runtime/driver calls (uprobes) and NVIDIA device ioctls
 * (syscall tracepoints), aggregated in maps.
 *
 * Compile-time parameters (from ebpftool/tracers/gpu.py):
 *   GPU_FUNCTIONS      list of TRACE(id, kind, dir, mem, stream_arg, blocking), one per
 *                      traced function (the table in ebpftool/tracers/cuda_api.py);
 *                      each gives a uprobe enter_<id> and a uretprobe leave_<id>
 *   GPU_CALL_BUCKET(v) bucket index of a call or ioctl duration (semconv GPU_CALL_DURATION_BUCKETS)
 *   FILTER_PIDS        1: only pids in watched_pids (and their children) are traced
 *   SPAN_THRESHOLD_NS  a blocking call at least this long becomes a span
 *   SAMPLE_EVERY       N > 0: also one call in N (per CPU) becomes a span
 *   IOCTL_PREFIX, IOCTL_PREFIX_LEN  device path prefix whose fds are watched
 *   RINGBUF_PAGES      size of the span ring buffer
 */
#include <uapi/linux/ptrace.h>
#include "gpu.h"

#ifndef FILTER_PIDS
#define FILTER_PIDS 0
#endif
#ifndef SPAN_THRESHOLD_NS
#define SPAN_THRESHOLD_NS 1000000
#endif
#ifndef SAMPLE_EVERY
#define SAMPLE_EVERY 0
#endif
#ifndef IOCTL_PREFIX
#define IOCTL_PREFIX "/dev/nvidia"
#define IOCTL_PREFIX_LEN 11
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 64
#endif
#ifndef GPU_FUNCTIONS
#define GPU_FUNCTIONS
#endif

/* One traced call in flight: what the return needs from the entry. */
struct frame {
    u64 start_ns;
    u64 arg;      /* ALLOC: address of the out-pointer; FREE: the pointer; LAUNCH: the kernel */
    u64 size;
    u64 stream;
    u32 fn;
    u32 dir;
};

/* Calls in flight on one thread. A runtime call (cudaMalloc) calls the driver
 * (cuMemAlloc_v2) on the same thread: the inner call sees depth > 0, is
 * counted as nested and left out of the byte, allocation and launch totals. */
struct thread_state {
    u32 depth;
    u32 pid;      /* a reused tid from another process starts afresh */
    struct frame frames[MAX_NESTING];
};

struct ioctl_inflight {
    u64 start_ns;
    struct ioctl_key key;
};

BPF_HASH(watched_pids, u32, u8, 4096);
BPF_TABLE("lru_hash", u32, struct thread_state, threads, 16384);
BPF_ARRAY(zero_thread, struct thread_state, 1);
BPF_ARRAY(zero_hist, struct hist_value, 1);
BPF_PERCPU_HASH(call_hist, struct call_key, struct hist_value, 16384);
BPF_PERCPU_HASH(call_bytes, struct call_key, u64, 16384);
BPF_PERCPU_HASH(launches, struct launch_key, u64, 16384);
BPF_HASH(allocations, struct alloc_key, struct alloc_value, 262144);
BPF_PERCPU_HASH(outstanding, struct outstanding_key, s64, 4096);
BPF_PERCPU_ARRAY(sample_counter, u64, 1);
BPF_HASH(process_names, u32, struct process_name, 16384);
BPF_RINGBUF_OUTPUT(gpu_events, RINGBUF_PAGES);

BPF_HASH(open_pending, u32, struct fd_device, 1024);
BPF_HASH(device_fds, struct fd_key, struct fd_device, 16384);
BPF_HASH(ioctl_start, u32, struct ioctl_inflight, 4096);
BPF_PERCPU_HASH(ioctl_hist, struct ioctl_key, struct hist_value, 4096);

static __always_inline int pid_watched(u32 pid)
{
#if FILTER_PIDS
    return watched_pids.lookup(&pid) != NULL;
#else
    return 1;
#endif
}

/* The n-th integer argument (0-based) at function entry: registers, then the stack
 * (at the first instruction rsp points at the return address). */
static __always_inline u64 read_arg(struct pt_regs *ctx, u32 n)
{
    switch (n) {
    case 0: return PT_REGS_PARM1(ctx);
    case 1: return PT_REGS_PARM2(ctx);
    case 2: return PT_REGS_PARM3(ctx);
    case 3: return PT_REGS_PARM4(ctx);
    case 4: return PT_REGS_PARM5(ctx);
    case 5: return PT_REGS_PARM6(ctx);
    }
    u64 v = 0;
    bpf_probe_read_user(&v, sizeof(v), (void *)(PT_REGS_SP(ctx) + 8 * (n - 5)));
    return v;
}

static __always_inline int on_enter(struct pt_regs *ctx, u32 fn, u32 kind, u32 dir, u32 stream_arg)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32, tid = (u32)id;
    if (!pid_watched(pid))
        return 0;
    struct thread_state *st = threads.lookup(&tid);
    if (!st || st->pid != pid) {
        u32 zero = 0;
        struct thread_state *init = zero_thread.lookup(&zero);
        if (!init)
            return 0;
        threads.update(&tid, init);
        st = threads.lookup(&tid);
        if (!st)
            return 0;
        st->pid = pid;
        /* a thread's first traced call: name its process (once per thread, not per call) */
        struct process_name name = {};
        bpf_get_current_comm(&name.comm, sizeof(name.comm));
        process_names.update(&pid, &name);
    }
    u32 d = st->depth;
    st->depth = d + 1;
    if (d >= MAX_NESTING) {
        stat_add(STAT_GPU_TOO_DEEP, 1);
        return 0;
    }
    struct frame *f = &st->frames[d];
    f->fn = fn;
    f->dir = dir;
    f->arg = 0;
    f->size = 0;
    f->stream = 0;
    if (kind == ARG_ALLOC) {
        f->arg = PT_REGS_PARM1(ctx);
        f->size = PT_REGS_PARM2(ctx);
    } else if (kind == ARG_FREE || kind == ARG_LAUNCH) {
        f->arg = PT_REGS_PARM1(ctx);
    } else if (kind == ARG_MEMCPY_KIND) {
        u32 k = (u32)PT_REGS_PARM4(ctx);  /* an enum: the register's upper half is undefined */
        f->size = PT_REGS_PARM3(ctx);
        f->dir = k <= 4 ? k + 1 : DIR_UNKNOWN;
    } else if (kind == ARG_MEMCPY_FIXED) {
        f->size = PT_REGS_PARM3(ctx);
    }
    if (stream_arg != NO_STREAM_ARG)
        f->stream = read_arg(ctx, stream_arg);
    f->start_ns = bpf_ktime_get_ns();  /* last, so the probe's own work is not in the duration */
    return 0;
}

static __always_inline void add_bytes(struct call_key *key, u64 n)
{
    u64 zero = 0;
    u64 *v = call_bytes.lookup_or_try_init(key, &zero);
    if (v)
        *v += n;
}

static __always_inline void add_outstanding(u32 pid, u32 mem, s64 n)
{
    struct outstanding_key key = {.pid = pid, .mem = mem};
    s64 zero = 0;
    s64 *v = outstanding.lookup_or_try_init(&key, &zero);
    if (v)
        *v += n;
}

static __always_inline void record_alloc(u32 pid, u32 tid, u32 fn, u32 mem, struct frame *f, u64 now)
{
    u64 ptr = 0;
    if (bpf_probe_read_user(&ptr, sizeof(ptr), (void *)f->arg) != 0 || ptr == 0)
        return;
    struct alloc_key key = {.pid = pid, .ptr = ptr};
    struct alloc_value *old = allocations.lookup(&key);
    if (old) {
        /* The address was freed without a traced free (cudaDeviceReset, cuCtxDestroy, a free still
         * returning on another thread): its old size is no longer outstanding. */
        add_outstanding(pid, old->mem, -(s64)old->size);
        stat_add(STAT_GPU_ADDRESS_REUSED, 1);
    }
    struct alloc_value val = {.size = f->size, .ts_ns = now, .tid = tid, .fn = fn, .mem = mem};
    if (allocations.update(&key, &val) != 0) {
        stat_add(STAT_GPU_ALLOC_MAP_FULL, 1);
        return;
    }
    f->arg = ptr;  /* for the span */
    add_outstanding(pid, mem, f->size);
}

static __always_inline void record_free(u32 pid, struct frame *f)
{
    struct alloc_key key = {.pid = pid, .ptr = f->arg};
    struct alloc_value *a = allocations.lookup(&key);
    if (!a)
        return;  /* allocated before the tracer started, or not by a traced function */
    f->size = a->size;
    add_outstanding(pid, a->mem, -(s64)a->size);
    allocations.delete(&key);
}

static __always_inline int want_span(u32 blocking, u64 duration)
{
    if (blocking && duration >= SPAN_THRESHOLD_NS)
        return 1;
#if SAMPLE_EVERY > 0
    u32 zero = 0;
    u64 *c = sample_counter.lookup(&zero);
    if (c && (++*c % SAMPLE_EVERY) == 0)
        return 1;
#endif
    return 0;
}

static __always_inline int on_leave(struct pt_regs *ctx, u32 fn, u32 kind, u32 mem, u32 blocking)
{
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32, tid = (u32)id;
    struct thread_state *st = threads.lookup(&tid);
    if (!st || st->depth == 0 || st->pid != pid)
        return 0;
    u32 d = st->depth - 1;
    st->depth = d;
    if (d >= MAX_NESTING)
        return 0;
    struct frame *f = &st->frames[d];
    if (f->fn != fn) {
        /* an entry whose return was never seen (e.g. a longjmp): start afresh */
        stat_add(STAT_GPU_UNMATCHED_RETURN, 1);
        st->depth = 0;
        return 0;
    }
    u64 duration = now - f->start_ns;
    s32 rc = (s32)PT_REGS_RC(ctx);
    struct call_key key = {.pid = pid, .fn = fn, .nested = d > 0, .dir = f->dir, .rc = rc};

    u32 zero = 0;
    struct hist_value *h = call_hist.lookup(&key);
    if (!h) {
        struct hist_value *init = zero_hist.lookup(&zero);
        if (init) {
            call_hist.update(&key, init);
            h = call_hist.lookup(&key);
        }
    }
    if (h)
        hist_add(h, GPU_CALL_BUCKET(duration), duration);
    else
        stat_add(STAT_GPU_HIST_MAP_FULL, 1);  /* the memory accounting below goes on */

    if (!key.nested) {
        if (kind == ARG_ALLOC) {
            add_bytes(&key, f->size);
            if (rc == 0)
                record_alloc(pid, tid, fn, mem, f, now);
        } else if (kind == ARG_MEMCPY_KIND || kind == ARG_MEMCPY_FIXED) {
            add_bytes(&key, f->size);
        } else if (kind == ARG_FREE && rc == 0 && f->arg) {
            record_free(pid, f);
        } else if (kind == ARG_LAUNCH) {
            struct launch_key lk = {.pid = pid, .fn = fn, .rc = rc, .func = f->arg};
            u64 one = 0;
            u64 *n = launches.lookup_or_try_init(&lk, &one);
            if (n)
                *n += 1;
        }
    }

    if (!want_span(blocking, duration) || !span_budget_take(now))
        return 0;
    struct gpu_call_event *e = gpu_events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_ringbuf_full();
        return 0;
    }
    e->start_ns = f->start_ns;
    e->end_ns = now;
    e->bytes = f->size;
    e->stream = f->stream;
    e->ptr = f->arg;
    e->pid = pid;
    e->tid = tid;
    e->rc = rc;
    e->fn = fn;
    e->dir = f->dir;
    e->nested = key.nested;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    gpu_events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES));
    return 0;
}

#define TRACE(id, kind, dir, mem, stream_arg, blocking)                                     \
    int enter_##id(struct pt_regs *ctx) { return on_enter(ctx, id, kind, dir, stream_arg); } \
    int leave_##id(struct pt_regs *ctx) { return on_leave(ctx, id, kind, mem, blocking); }
GPU_FUNCTIONS

/* ---- --pid: children of a watched process are watched too ---------------- */
#if FILTER_PIDS
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 parent = bpf_get_current_pid_tgid() >> 32, child = args->child_pid;  /* parent_pid is the forking thread's id */
    u8 one = 1;
    if (watched_pids.lookup(&parent))
        watched_pids.update(&child, &one);
    return 0;
}
#endif

/* ---- ioctls on the NVIDIA device nodes ------------------------------------
 * An fd is watched from the openat() that returned it (path starts with
 * IOCTL_PREFIX) to its close(); user space adds the fds open before the
 * tracer started from /proc/PID/fd. */
TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32, tid = (u32)id;
    if (!pid_watched(pid))
        return 0;
    char path[IOCTL_PATH_MAX] = {};
    if (bpf_probe_read_user_str(path, sizeof(path), args->filename) < IOCTL_PREFIX_LEN)
        return 0;
#pragma unroll
    for (int i = 0; i < IOCTL_PREFIX_LEN; i++) {
        if (path[i] != IOCTL_PREFIX[i])
            return 0;
    }
    struct fd_device dev = {};
#pragma unroll
    for (int i = 0; i < IOCTL_DEVICE_LEN - 1; i++)
        dev.device[i] = path[IOCTL_PREFIX_LEN + i];
    open_pending.update(&tid, &dev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct fd_device *dev = open_pending.lookup(&tid);
    if (!dev)
        return 0;
    if (args->ret >= 0) {
        struct fd_key key = {.pid = id >> 32, .fd = args->ret};
        device_fds.update(&key, dev);
    }
    open_pending.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    struct fd_key key = {.pid = bpf_get_current_pid_tgid() >> 32, .fd = args->fd};
    device_fds.delete(&key);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
    u64 id = bpf_get_current_pid_tgid();
    struct fd_key key = {.pid = id >> 32, .fd = args->fd};
    struct fd_device *dev = device_fds.lookup(&key);
    if (!dev)
        return 0;
    struct ioctl_inflight in = {.start_ns = bpf_ktime_get_ns()};
    in.key.pid = key.pid;
    in.key.request = args->cmd;
    __builtin_memcpy(in.key.device, dev->device, IOCTL_DEVICE_LEN);
    u32 tid = (u32)id;
    ioctl_start.update(&tid, &in);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
    u64 now = bpf_ktime_get_ns();
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct ioctl_inflight *in = ioctl_start.lookup(&tid);
    if (!in)
        return 0;
    struct ioctl_key key = in->key;
    u64 duration = now - in->start_ns;
    ioctl_start.delete(&tid);
    key.err = args->ret < 0 ? (s32)args->ret : 0;
    u32 zero = 0;
    struct hist_value *h = ioctl_hist.lookup(&key);
    if (!h) {
        struct hist_value *init = zero_hist.lookup(&zero);
        if (!init)
            return 0;
        ioctl_hist.update(&key, init);
        h = ioctl_hist.lookup(&key);
        if (!h)
            return 0;
    }
    hist_add(h, GPU_CALL_BUCKET(duration), duration);
    return 0;
}

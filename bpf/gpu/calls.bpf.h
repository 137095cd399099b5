/* A traced CUDA call: its entry saves what the return needs in the thread's frame; its return adds the
 * duration to the series' histogram and, for an outermost call, its bytes, memory and launches. */

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
    read_user(&v, sizeof(v), (void *)(PT_REGS_SP(ctx) + 8 * (n - 5)));
    return v;
}

/* Entry of traced function fn: kind says which arguments to keep (ARG_*), dir the copy direction the
 * function fixes, stream_arg which argument is the stream (NO_STREAM_ARG: none). */
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

/* The call's duration into its series' histogram. */
static __always_inline void add_call_duration(struct call_key *key, u64 duration)
{
    u32 zero = 0;
    struct hist_value *h = call_hist.lookup(key);
    if (!h) {
        struct hist_value *init = zero_hist.lookup(&zero);
        if (init) {
            call_hist.update(key, init);
            h = call_hist.lookup(key);
        }
    }
    if (h)
        hist_add(h, GPU_CALL_BUCKET(duration), duration);
    else
        stat_add(STAT_GPU_HIST_MAP_FULL, 1);  /* its bytes, memory and span are still counted */
}

/* Bytes a call allocated or copied, into its series. */
static __always_inline void add_call_bytes(struct call_key *key, u64 n)
{
    u64 zero = 0;
    u64 *v = call_bytes.lookup_or_try_init(key, &zero);
    if (v)
        *v += n;
}

/* A kernel launch of process pid: counted per launching function, return code and kernel. */
static __always_inline void count_launch(u32 pid, u32 fn, s32 rc, u64 kernel)
{
    struct launch_key key = {.pid = pid, .fn = fn, .rc = rc, .func = kernel};
    u64 zero = 0;
    u64 *n = launches.lookup_or_try_init(&key, &zero);
    if (n)
        *n += 1;
}

/* Return of traced function fn: kind as at its entry, mem the memory kind it allocates (MEM_*),
 * blocking whether a long call is a span. */
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
    add_call_duration(&key, duration);

    /* A nested call is part of its caller's work: counting its bytes and memory too would count them twice. */
    if (!key.nested) {
        if (kind == ARG_ALLOC) {
            add_call_bytes(&key, f->size);
            if (rc == 0)
                record_alloc(pid, tid, fn, mem, f, now);
        } else if (kind == ARG_MEMCPY_KIND || kind == ARG_MEMCPY_FIXED) {
            add_call_bytes(&key, f->size);
        } else if (kind == ARG_FREE && rc == 0 && f->arg) {
            record_free(pid, f);
        } else if (kind == ARG_LAUNCH) {
            count_launch(pid, fn, rc, f->arg);
        }
    }

    if (want_span(blocking, duration))
        send_call_span(f, &key, tid, now);
    return 0;
}

/* Spans: which returned calls go to user space (a blocking call above SPAN_THRESHOLD_NS, or one in
 * SAMPLE_EVERY), within the span budget, and the record sent. */

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

/* Call f of series key, which returned now on thread tid, as a span (if the span budget allows). */
static __always_inline void send_call_span(struct frame *f, struct call_key *key, u32 tid, u64 now)
{
    if (!span_budget_take(now))
        return;
    struct gpu_call_event *e = gpu_events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_ringbuf_full();
        return;
    }
    e->start_ns = f->start_ns;
    e->end_ns = now;
    e->bytes = f->size;
    e->stream = f->stream;
    e->ptr = f->arg;
    e->pid = key->pid;
    e->tid = tid;
    e->rc = key->rc;
    e->fn = key->fn;
    e->dir = f->dir;
    e->nested = key->nested;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    gpu_events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES));
}

/* Records to user space: captures of a sampled request's bytes. */

/* Bytes to copy into a capture. */
static __always_inline u64 capture_len(u64 n)
{
    return bounded(n, CAPTURE_BYTES < CAPTURE_MAX ? CAPTURE_BYTES : CAPTURE_MAX);
}

/* A capture record of connection c's current request, reserved with its
 * header filled and no data yet (len 0); NULL, counted, when the ring is full. */
static __always_inline struct capture_event *new_capture(struct conn_state *c, u32 part)
{
    struct capture_event *e = events.ringbuf_reserve(sizeof(struct capture_event));
    if (!e) {
        count_ringbuf_full();
        return 0;
    }
    e->type = EVENT_CAPTURE;
    e->pid = c->pid;
    e->conn = c->id;
    e->seq = c->seq;
    e->part = part;
    e->len = 0;
    e->pad = 0;
    return e;
}

static __always_inline void emit_capture(struct conn_state *c, u32 part, u64 ptr, u32 len, int tail)
{
    struct capture_event *e = new_capture(c, part);
    if (!e)
        return;
    u64 n = capture_len(len);
    u64 src = tail ? ptr + len - n : ptr;
    if (read_user(e->data, n, (void *)src) == 0)
        e->len = n;
    events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES));
}

static __always_inline void remember_last_write(u64 *k, struct conn_state *c, u64 ptr, u32 len)
{
    /* last_writes values are too big for the stack: inserted from a zeroed map value. */
    u32 zero = 0;
    struct last_write *empty = last_write_init.lookup(&zero);
    if (!empty)
        return;
    struct last_write *w = last_writes.lookup(k);
    if (!w) {
        last_writes.update(k, empty);
        w = last_writes.lookup(k);
        if (!w)
            return;
    }
    u64 n = capture_len(len);
    w->seq = c->seq;
    w->len = 0;
    if (read_user(w->data, n, (void *)(ptr + len - n)) == 0)
        w->len = n;
}

static __always_inline void emit_last_write(u64 *k, struct conn_state *c)
{
    struct last_write *w = last_writes.lookup(k);
    if (!w || w->seq != c->seq || w->len == 0)
        return;
    struct capture_event *e = new_capture(c, PART_RESPONSE_LAST);
    if (!e)
        return;
    u64 n = capture_len(w->len);
    if (bpf_probe_read_kernel(e->data, n, w->data) == 0)
        e->len = n;
    events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES));
    w->len = 0;
}

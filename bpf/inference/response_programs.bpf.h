/* Programs reached by tail calls from a response write (event scans, the head's length, the end found),
 * and the idle flush user space runs. Each is its own program so the verifier walks its loops once. */

/* Token counting runs in its own program, reached by a tail call from the
 * write exits that need it: its long loop is verified once, not once per
 * path through the write handling. It scans one buffer of the write per run
 * and tail-calls itself for the next: the last SSE_SCAN_MAX bytes of a longer
 * buffer (where a JSON answer states its usage), then the write's next iovec
 * (a server may write the head, a chunk-size line and the events as separate
 * buffers of one writev). */
struct scan_args {
    u64 key;
    u64 ptr;        /* the buffer scanned in this run */
    u64 start;      /* when the write began */
    u64 iov_array;  /* the write's struct iovec array (0: not vectored) */
    u64 remaining;  /* bytes of the write after this buffer */
    u32 len;        /* bytes of this buffer */
    u8 iov_next;    /* index of the iovec after this buffer */
    u8 iov_in_kernel;  /* iov_array is the kernel's copy (BTF send hook), not user memory */
    u8 tail_pass;   /* this run looks at the buffer's last bytes, for the usage only */
    u8 scan;        /* (head) search the write for events after the head */
    u8 whole;       /* all the write's bytes went out (or will), not only asked to */
    u8 model_looked; /* this write was searched for the answer's model (SCAN_MODEL) */
    u8 pad[6];
};
BPF_PERCPU_ARRAY(scan_input, struct scan_args, 1);
/* Programs reached by tail calls, in the order of SCAN_FUNCTIONS (ebpftool/tracers/inference/plans.py), then
 * SWITCHED_FUNCTION (not from the TLS uprobes: their slot stays empty). */
#define SCAN_EVENTS 0
#define SCAN_MARKS 1
#define SCAN_HEAD 2
#define SCAN_FINISH 3
#define SCAN_MODEL 4
#define SCAN_NAMES 5
#define SCAN_SWITCHED 6
#define SCAN_PROGRAMS 7
BPF_PROG_ARRAY(scan_prog, SCAN_PROGRAMS);
#if TLS_HOOKS
/* The same programs loaded as uprobe programs (a tail call stays within a program type), in the same
 * order: reached from SSL_write's return, where a memory-BIO TLS write hands its plaintext on. */
BPF_PROG_ARRAY(scan_prog_tls, SCAN_PROGRAMS);
#endif

/* The next program of a write's scan, in the array of the caller's program type. */
static __always_inline void next_scan(void *ctx, int from_uprobe, u32 program)
{
#if TLS_HOOKS
    if (from_uprobe) {
        scan_prog_tls.call(ctx, program);
        return;
    }
#endif
    scan_prog.call(ctx, program);
}

/* What each tail-called program starts from: the write being scanned (*args) and its connection's state;
 * NULL when either is gone. */
static __always_inline struct conn_state *scanned_conn(struct scan_args **args)
{
    u32 zero = 0;
    struct scan_args *a = scan_input.lookup(&zero);
    *args = a;
    return a ? find_conn(a->key) : 0;
}

/* A response head was written: the length of its body, if it says. Then the write's events, if asked. */
static __always_inline int scan_response_head_in(void *ctx, int from_uprobe)
{
    struct scan_args *a;
    struct conn_state *c = scanned_conn(&a);
    if (!c)
        return 0;
    int complete = head_written(c, c->status, a->ptr, a->len, a->len + a->remaining, a->whole);
    if (a->scan) {
        c->end_after_scan = complete;
        next_scan(ctx, from_uprobe, SCAN_EVENTS);
    } else if (complete) {
        /* in a program of its own: the head's loops leave many states, each of which would walk it */
        next_scan(ctx, from_uprobe, SCAN_FINISH);
    }
    return 0;
}

/* The response of a->key is complete with the write just seen. */
static __always_inline int finish_written_response_in(void *ctx, int from_uprobe)
{
    struct scan_args *a;
    struct conn_state *c = scanned_conn(&a);
    if (!c)
        return 0;
    u64 k = a->key;
    finish_request(&k, c, c->resp_end);
    return 0;
}

static __always_inline int scan_sse_events_in(void *ctx, int from_uprobe)
{
    struct scan_args *a;
    struct conn_state *c = scanned_conn(&a);
    if (!c)
        return 0;
    if (c->model == 0 && !a->tail_pass && !a->model_looked && c->op != OP_NONE)
        next_scan(ctx, from_uprobe, SCAN_MODEL);  /* once per answer (per write while only its head came), then back here */
    u32 len = a->len;
    u64 tail = a->tail_pass & (len > SSE_SCAN_MAX);
    u64 skip = (len - SSE_SCAN_MAX) & -tail;  /* a tail pass scans the buffer's last SSE_SCAN_MAX bytes */
    asm volatile("" : "+r"(skip));
    int found = find_events(a->ptr + skip, len - skip, (c->flags / REQ_NDJSON) & 1);
    if (found)  /* the named events first where it noted words of them (a tail pass counts no token) */
        next_scan(ctx, from_uprobe, found == 2 && !a->tail_pass ? SCAN_NAMES : SCAN_MARKS);
    return 0;
}

/* The named events of the buffer find_events() just scanned (find_names()), then its marks. */
static __always_inline int scan_sse_names_in(void *ctx, int from_uprobe)
{
    u32 zero = 0;
    struct scratch *s = scratch_buf.lookup(&zero);
    if (!s)
        return 0;
    find_names(s);
    next_scan(ctx, from_uprobe, SCAN_MARKS);
    return 0;
}

static __always_inline int scan_sse_marks_in(void *ctx, int from_uprobe)
{
    u32 zero = 0;
    struct scan_args *a = scan_input.lookup(&zero);
    struct scratch *s = scratch_buf.lookup(&zero);
    if (!a || !s)
        return 0;
    u64 k = a->key;
    struct conn_state *c = find_conn(k);
    if (!c)
        return 0;
    u32 tokens = 0, usage = 0, has_usage = 0;
    find_marks(s, &tokens, &usage, &has_usage);
    u32 events = s->events;
    u32 len = a->len;
    if (!a->tail_pass) {
        if (tokens || (events && !(c->flags & REQ_NDJSON))) {
            if (!(c->flags & REQ_SSE)) {
                c->flags |= REQ_SSE;
                if (c->op == OP_NONE)
                    c->op = OP_STREAM;
            }
        }
        if (tokens) {
            if (c->first_token == 0)
                c->first_token = a->start;
            c->last_token = a->start;
            c->tokens += tokens;
        }
        /* The last buffer with events (or of a plain answer) is kept for its usage and model; [DONE]
         * and the chunked-encoding trailer after it are not. */
        if ((c->flags & REQ_SAMPLED) && (events || !(c->flags & REQ_SSE)))
            remember_last_write(&k, c, a->ptr, len);
    }
    if (has_usage) {
        c->usage_tokens = usage;
        c->flags |= REQ_USAGE;
    }
    if (!a->tail_pass && len > SSE_SCAN_MAX) {
        a->tail_pass = 1;
        next_scan(ctx, from_uprobe, SCAN_EVENTS);
    } else if (a->iov_array != 0 && a->remaining != 0 && a->iov_next < IOV_SCAN_MAX) {
        u64 n = 0;
        u64 base = nth_iovec(a->iov_array, a->iov_in_kernel, a->iov_next, a->remaining, &n);
        if (n > 0) {
            a->ptr = base;
            a->len = n;
            a->remaining -= n;
            a->iov_next++;
            a->tail_pass = 0;
            next_scan(ctx, from_uprobe, SCAN_EVENTS);
        }
    }
    /* the scan of this write ends here (a tail call that was made does not return) */
    if (c->end_after_scan) {
        c->end_after_scan = 0;
        finish_request(&k, c, c->resp_end);
    }
    return 0;
}

/* The model the answer names (model.bpf.h), looked for in the first buffer the event scan sees. */
static __always_inline int scan_model_in(void *ctx, int from_uprobe)
{
    struct scan_args *a;
    struct conn_state *c = scanned_conn(&a);
    if (!c)
        return 0;
    c->model = find_model(a->ptr, a->len);
    a->model_looked = 1;
    next_scan(ctx, from_uprobe, SCAN_EVENTS);
    return 0;
}

static __always_inline void forget_conn(u64 *k);  /* per way in (conn_table*.bpf.h) */

/* A 101 Switching Protocols that takes no h2c Upgrade (WebSocket, another protocol): its request ends with
 * it, and what follows is no request: the connection is let go. */
static __always_inline void switched_protocols_elsewhere(u64 *k, struct conn_state *c, u64 now)
{
    finish_request(k, c, now);
    forget_conn(k);
}

/* Whether a response head (its first `length` bytes in s->data: read_head()) names h2c, as the 101 of an
 * h2c Upgrade does in its Upgrade header (protocol names are case-insensitive). */
static __always_inline int head_names_h2c(struct scratch *s, u64 length)
{
    *(volatile u64 *)&s->limit = length;
#pragma clang loop unroll(disable)
    for (u64 at = 0; at < HEAD_SCAN_MAX; at += 8) {
        if (at >= *(volatile u64 *)&s->limit)
            break;
        u64 h2c = ZERO_BYTES((head_word(s, at) | LOWER_CASE) ^ EVERY_BYTE('h')) &
                  ZERO_BYTES(head_word(s, at + 1) ^ EVERY_BYTE('2')) &
                  ZERO_BYTES((head_word(s, at + 2) | LOWER_CASE) ^ EVERY_BYTE('c'));
        if (h2c) {
            u64 p = at + first_byte(h2c);  /* its first candidate, checked exactly, inside the head */
            if (p + 3 <= *(volatile u64 *)&s->limit && LOW(head_word(s, p) | LOWER_CASE, 3) == W3('h', '2', 'c'))
                return 1;
        }
    }
    return 0;
}

/* A 101 went out on a cleartext connection (written_buffer(): WRITE_SWITCHED). If its head names h2c, the
 * h2c Upgrade (RFC 7540 3.2) is taken: the connection is HTTP/2 from the end of that head on (the server's
 * SETTINGS often follow it in the same write), the client's frames come after its preface, and the request
 * that asked is stream 1, answered in HTTP/2: user space learns it from the open event. Else the request
 * ends here and the connection is let go. */
static __always_inline int switched_protocols_in(void *ctx)
{
    struct scan_args *a;
    struct conn_state *c = scanned_conn(&a);
    if (!c)
        return 0;
    u64 k = a->key, now = c->resp_end;
    struct response_head head = read_head(a->ptr, a->len);
    u32 zero = 0;
    struct scratch *s = scratch_buf.lookup(&zero);
    if (!s || head.length == 0 || !head_names_h2c(s, head.length)) {
        switched_protocols_elsewhere(&k, c, now);
        return 0;
    }
    h2_begin(c, now, H2_PREFACE_LEN, c->req_start);
    c->h2_pass[H2_FROM_SERVER] = head.length;  /* the 101's head: passed over, not frames */
    h2_bytes(ctx, H2_VIA_WRITE, &k, c, H2_FROM_SERVER, a->ptr, a->len, a->len + a->remaining, a->iov_array,
             a->iov_in_kernel, now);
    return 0;
}

/* The programs (SCAN_FUNCTIONS in ebpftool/tracers/inference/plans.py), and their uprobe twins. */
#if IO_PROGRAMS
int scan_sse_events(void *ctx) { return scan_sse_events_in(ctx, 0); }
int scan_sse_marks(void *ctx) { return scan_sse_marks_in(ctx, 0); }
int scan_response_head(void *ctx) { return scan_response_head_in(ctx, 0); }
int finish_written_response(void *ctx) { return finish_written_response_in(ctx, 0); }
int scan_model(void *ctx) { return scan_model_in(ctx, 0); }
int scan_sse_names(void *ctx) { return scan_sse_names_in(ctx, 0); }
int switched_protocols(void *ctx) { return switched_protocols_in(ctx); }
#endif
#if TLS_PROGRAMS
int scan_sse_events_tls(struct pt_regs *ctx) { return scan_sse_events_in(ctx, 1); }
int scan_sse_marks_tls(struct pt_regs *ctx) { return scan_sse_marks_in(ctx, 1); }
int scan_response_head_tls(struct pt_regs *ctx) { return scan_response_head_in(ctx, 1); }
int finish_written_response_tls(struct pt_regs *ctx) { return finish_written_response_in(ctx, 1); }
int scan_model_tls(struct pt_regs *ctx) { return scan_model_in(ctx, 1); }
int scan_sse_names_tls(struct pt_regs *ctx) { return scan_sse_names_in(ctx, 1); }
#endif

/* Run by user space (BPF_PROG_TEST_RUN) for a connection whose response went
 * quiet (args: key, the resp_end user space saw): a server that neither reads
 * again nor closes after a Content-Length answer would otherwise hold its last
 * request until the connection's next request. Only if nothing moved since. */
#if IO_PROGRAMS
int flush_idle_request(struct bpf_raw_tracepoint_args *ctx)
{
    u64 k = ctx->args[0];
    struct conn_state *c = find_conn(k);
    if (!c || c->req_start == 0 || c->resp_start == 0 || c->resp_end != ctx->args[1])
        return 0;
    finish_request(&k, c, bpf_ktime_get_ns());
    return 1;
}
#endif

/* What both ways in share: where a read's or write's bytes are, and a write handed to the state machine
 * (then to the tail-called programs). */

/* How the buffer of a read or write syscall is found at its exit. */
#define BUF_PLAIN 0   /* read/write/recvfrom/sendto: a pointer */
#define BUF_IOV 1     /* readv/writev: the first struct iovec */
#define BUF_MSG 2     /* recvmsg/sendmsg: the first iovec of a struct user_msghdr */
#define BUF_NONE 3    /* sendfile: no user bytes */

/* The user buffer holding the first bytes moved; for vectored calls, *iov_array
 * is the struct iovec array (else 0). */
static __always_inline u64 first_buffer(u32 how, u64 ptr, long ret, u32 *len, u64 *iov_array)
{
    *len = ret;
    *iov_array = 0;
    if (how == BUF_PLAIN)
        return ptr;
    if (how == BUF_NONE)
        return 0;
    u64 iov_ptr = ptr;
    if (how == BUF_MSG) {
        /* struct user_msghdr: msg_name, msg_namelen (+pad), msg_iov */
        if (read_user(&iov_ptr, sizeof(iov_ptr), (void *)(ptr + 16)) != 0)
            return 0;
    }
    *iov_array = iov_ptr;
    struct user_iov iov = {};
    if (read_user(&iov, sizeof(iov), (void *)iov_ptr) != 0)
        return 0;
    if (iov.len < *len)
        *len = iov.len;
    return iov.base;
}

#if TLS_HOOKS
static __always_inline void tls_closed(struct conn_state *c);  /* hooks_tls.bpf.h */
#endif

/* The server closed connection *k (or reset it): an HTTP/2 connection's end goes to user space, a TLS one no
 * library read is counted, the request in progress is finished, and the connection is forgotten. */
static __always_inline void connection_closed(u64 *k, struct conn_state *c)
{
    u64 now = bpf_ktime_get_ns();
    if (c->proto == PROTO_H2)
        h2_conn_event(c, EVENT_H2_CLOSE, now, 0);
#if TLS_HOOKS
    tls_closed(c);
#endif
    finish_request(k, c, now);
    forget_conn(k);
}

/* A write that went out: the state machine, then the event count (tail call) if needed.
 * start: when the write began (syscall entry, or the socket hook's own time); now: when it ended.
 * from_uprobe: the caller is a uprobe program (a TLS library call's return), not a tracepoint's.
 * From the write's first buffer (ptr, len; 0: no user bytes) of ret bytes in all (whole: all of them went
 * out or will, not only asked to); iov_array: its
 * struct iovec array for vectored writes (else 0), in user memory or (iov_in_kernel) the kernel's copy. */
static __always_inline int written_buffer(void *ctx, u64 *k, struct conn_state *c, u64 ptr, u32 len, u64 ret,
                                          int whole, u64 iov_array, int iov_in_kernel, u64 start, u64 now,
                                          int from_uprobe)
{
    if (c->proto == PROTO_H2) {
        if (ptr)
            h2_bytes(ctx, from_uprobe ? H2_VIA_TLS : H2_VIA_WRITE, k, c, H2_FROM_SERVER, ptr, len, ret, iov_array,
                     iov_in_kernel, now);
        return 0;
    }
    int next = on_write(k, c, ptr, ptr ? len : (u32)ret, ret, whole, start, now, ptr != 0 && len > 0);
    if (next == WRITE_DONE)
        return 0;
    u32 zero = 0;
    struct scan_args *in = scan_input.lookup(&zero);
    if (!in) {
        if (next == WRITE_SWITCHED)
            switched_protocols_elsewhere(k, c, now);
        return 0;  /* (a complete response: finished by what comes next on the connection) */
    }
    in->key = *k;
    in->ptr = ptr;
    in->start = start;
    in->iov_array = iov_array;
    in->remaining = ret > len ? ret - len : 0;
    in->len = len;
    in->iov_next = 1;
    in->iov_in_kernel = iov_in_kernel;
    in->tail_pass = 0;
    in->scan = next != WRITE_HEAD;
    in->whole = whole;
    in->model_looked = 0;
    if (next == WRITE_SWITCHED) {
        /* A 101 whose head may name h2c (cleartext only: over TLS, HTTP/2 is chosen by ALPN): read by a program
         * of its own. Any other 101 ends its request and lets the connection go. */
        if (!from_uprobe && ptr && whole) {
            scan_prog.call(ctx, SCAN_SWITCHED);
            stat_add(STAT_INF_SWITCH_UNREAD, 1);  /* not loaded yet */
        }
        switched_protocols_elsewhere(k, c, now);
        return 0;
    }
    if (next == WRITE_FINISH)
        next_scan(ctx, from_uprobe, SCAN_FINISH);  /* if it fails, the next read, write or close finishes it */
    else
        next_scan(ctx, from_uprobe, next == WRITE_SCAN ? SCAN_EVENTS : SCAN_HEAD);
    return 0;
}

/* The same, from the syscall's buffer argument (how, arg: see first_buffer()). */
static __always_inline int written(void *ctx, u64 *k, struct conn_state *c, u32 how, u64 arg, long ret,
                                   u64 start, u64 now)
{
    u32 len = 0;
    u64 iov_array = 0;
    u64 ptr = first_buffer(how, arg, ret, &len, &iov_array);
    return written_buffer(ctx, k, c, ptr, len, ret, 1, iov_array, 0, start, now, 0);  /* ret: what went out */
}

static __always_inline void count_accepted(u16 port)
{
    stat_add(STAT_INF_ACCEPTED, 1);
    u64 zero64 = 0;
    u64 *n = accepted.lookup_or_try_init(&port, &zero64);
    if (n)
        *n += 1;
}

/* The bytes TCP received and the application has not read yet, as conn_state.arrival_first_queued keeps them. */
static __always_inline u32 queued_count(u32 rcv_nxt, u32 copied_seq)
{
    return ((rcv_nxt - copied_seq) & ~ARRIVAL_QUEUED) | ARRIVAL_QUEUED;
}

/* The bytes in socket sk's receive queue, not read yet (queued_count()); 0 where the kernel's BTF gave no
 * offsets for them. The arrival hooks count them for HTTP/2 (conn_state.arrival_first_queued). */
static __always_inline u32 probe_queued_bytes(u64 sk)
{
#ifdef TCP_COPIED_SEQ_OFF
    u32 rcv_nxt = 0, copied_seq = 0;
    if (bpf_probe_read_kernel(&rcv_nxt, sizeof(rcv_nxt), (void *)(sk + TCP_RCV_NXT_OFF)) != 0 ||
        bpf_probe_read_kernel(&copied_seq, sizeof(copied_seq), (void *)(sk + TCP_COPIED_SEQ_OFF)) != 0)
        return 0;
    return queued_count(rcv_nxt, copied_seq);
#else
    return 0;
#endif
}

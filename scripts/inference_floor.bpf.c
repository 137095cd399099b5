/* The least a socket-hook tracer must do per HTTP request for exact request metrics (method, status,
 * duration histogram), used by scripts/bench_inference_breakdown.py as a floor under the real tracer's
 * cost. Not part of ebpftool: no pipelining, no spans, no parsing beyond the method and the status,
 * plain-buffer reads and writev-or-plain writes only (what nginx does), one probe in the connection
 * table, and a histogram series found by one array index (a perfect series cache).
 *
 * -DPORT=n: the server's port. -DSEND_HOOK_BTF=1: the send side runs on the tcp_sendmsg_locked BTF
 * tracepoint (typed arguments: the struct msghdr's buffer is loaded directly, no syscall registers and
 * no user-memory read of the iovec); else on the sock_send_length raw tracepoint like the tracer.
 * Loaded like ebpftool's own programs (ebpftool.core.bpf.BpfProgram): bpf/common.bpf.h is in front. */
#include <uapi/linux/ptrace.h>

#define TABLE_BITS 16
#define SLOT(sk) ((u32)(((u64)(sk) * 0x9E3779B97F4A7C15ULL) >> (64 - TABLE_BITS)))
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7

struct floor_conn {
    u64 key;    /* the socket's address, 0: free */
    u64 start;  /* request start (its first read) */
    u64 resp;   /* response start (its first write), 0: none yet */
    u16 status;
    u8 method;
};

BPF_ARRAY(conns, struct floor_conn, 1 << TABLE_BITS);
BPF_PERCPU_ARRAY(requests, u64, 64);  /* by a bucket index mixed from status, method and duration */

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != 6 /* IPPROTO_TCP */)
        return 0;
    u64 sk = (u64)args->skaddr;
    u32 slot = SLOT(sk);
    struct floor_conn *c = conns.lookup(&slot);
    if (!c)
        return 0;
    if (args->newstate == TCP_ESTABLISHED && args->oldstate == TCP_SYN_RECV && args->sport == PORT) {
        c->key = sk;
        c->start = 0;
        c->resp = 0;
    } else if (args->newstate == TCP_CLOSE && c->key == sk) {
        c->key = 0;
    }
    return 0;
}

static __always_inline struct floor_conn *followed(u64 sk)
{
    u32 slot = SLOT(sk);
    struct floor_conn *c = conns.lookup(&slot);
    return c && c->key == sk ? c : 0;
}

RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    if ((int)ctx->args[1] <= 0)
        return 0;
    struct floor_conn *c = followed(ctx->args[0]);
    if (!c)
        return 0;
    u64 now = bpf_ktime_get_ns();
    struct pt_regs *regs = CURRENT_SYSCALL_REGS();
    u64 head = 0;
    bpf_probe_read_user(&head, sizeof(head), (void *)regs->si);
    if (c->start && c->resp) {
        u64 d = c->resp - c->start;
        u32 b = ((d > 5000000) + (d > 10000000) + (d > 25000000) + c->status % 8 * 4 + c->method * 32) & 63;
        u64 *n = requests.lookup(&b);
        if (n)
            *n += 1;
    }
    c->start = now;
    c->resp = 0;
    c->method = (u32)head == 0x20544547;  /* "GET " */
    return 0;
}

static __always_inline void response_written(struct floor_conn *c, u64 ptr)
{
    u8 h[16] = {};
    bpf_probe_read_user(h, sizeof(h), (void *)ptr);
    u64 now = bpf_ktime_get_ns();
    if (c->resp == 0) {
        c->resp = now;
        c->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    }
}

#if SEND_HOOK_BTF
BPF_PERCPU_ARRAY(pointer_scratch, u64, 1);

/* TP_PROTO(const struct sock *sk, const struct msghdr *msg, const struct sk_buff *skb, int size_goal);
 * loaded by the benchmark as a BTF raw tracepoint: ctx[] holds typed pointers, loaded from directly. */
int tcp_sendmsg_locked(u64 *ctx)
{
    u32 zero = 0;
    u64 *scratch = pointer_scratch.lookup(&zero);
    if (!scratch)
        return 0;
    /* The verifier forbids arithmetic on a typed pointer; stored in a map it reads back as a number. */
    *(volatile u64 *)scratch = ctx[0];
    struct floor_conn *c = followed(*(volatile u64 *)scratch);
    if (!c)
        return 0;
    void *msg = (void *)ctx[1];
    u8 iter_type = *(u8 *)(msg + MSG_ITER_TYPE_OFF);
    u64 offset = *(u64 *)(msg + MSG_ITER_OFFSET_OFF);
    u64 p = *(u64 *)(msg + MSG_ITER_UBUF_OFF);  /* ITER_UBUF: the buffer; ITER_IOVEC: the kernel's copy of the iovec */
    if (iter_type == ITER_IOVEC_TYPE)
        p = *(u64 *)p;
    else if (iter_type != ITER_UBUF_TYPE)
        return 0;
    response_written(c, p + offset);
    return 0;
}
#else
RAW_TRACEPOINT_PROBE(sock_send_length)
{
    if ((int)ctx->args[1] <= 0)
        return 0;
    struct floor_conn *c = followed(ctx->args[0]);
    if (!c)
        return 0;
    struct pt_regs *regs = CURRENT_SYSCALL_REGS();
    u64 ptr = regs->si;
    if (regs->orig_ax == NR_WRITEV) {
        struct { u64 base; u64 len; } iov = {};
        bpf_probe_read_user(&iov, sizeof(iov), (void *)ptr);
        ptr = iov.base;
    }
    response_written(c, ptr);
    return 0;
}
#endif

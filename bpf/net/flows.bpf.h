/* A TCP socket's flow (a slot of `flows`, flow_table.bpf.h): created at the socket's first event, its bytes
 * and counters kept up to date, folded into the aggregate (and sent as a span) when the socket goes. */

/* The flow's segment and retransmit counts brought up to the socket's own. */
static __always_inline void refresh_tcp_counters(u64 sk, struct flow *f)
{
    struct tcp_counters t = {};
    read_tcp_counters(sk, &t);
    f->segs_out = t.segs_out - f->segs_out_base;
    f->segs_in = t.segs_in - f->segs_in_base;
#if NET_BTF_OFFSETS
    f->retransmits = (u32)(t.retrans - f->retrans_base);
#endif
}

/* The flow of a TCP socket, created empty when the socket is new to us. */
static __always_inline struct flow *flow_of(u64 sk, u16 family)
{
    struct flow *f = find_flow(sk);
    if (f)
        return f;
    f = claim_flow(sk);
    if (!f)
        return 0;   /* all of its slots taken */
    if (f->start_ns != 0)
        return f;   /* another CPU claimed it for this socket meanwhile */
    struct tcp_counters t = {};
    read_tcp_counters(sk, &t);
    f->segs_out_base = t.segs_out;
    f->segs_in_base = t.segs_in;
    f->retrans_base = t.retrans;
    f->family = family;
    f->protocol = NET_PROTO_TCP;
    f->start_ns = bpf_ktime_get_ns();
    return f;
}

/* Atomic: two threads may use one socket on two CPUs at once. */
static __always_inline void flow_add_bytes(struct flow *f, int ret, int tx)
{
    if (tx)
        __sync_fetch_and_add(&f->tx_bytes, (u64)ret);
    else
        __sync_fetch_and_add(&f->rx_bytes, (u64)ret);
}

/* ret bytes moved (tx: sent) by socket sk of this family and protocol: into its flow (TCP), else into
 * the aggregate. The current task is the process that sent or read. */
static __always_inline void account_io(u64 sk, u16 family, u16 protocol, int ret, int tx)
{
    if (ret <= 0 || (family != NET_AF_INET && family != NET_AF_INET6))
        return;
    if (protocol != NET_PROTO_TCP) {
        account_without_flow(sk, family, protocol, ret, tx);
        return;
    }
    struct flow *f = flow_of(sk, family);
    if (!f) {
        stat_add(NET_STAT_FLOWS_FULL, 1);
        account_without_flow(sk, family, protocol, ret, tx);
        return;
    }
    if (f->pid == 0) {
        f->pid = bpf_get_current_pid_tgid() >> 32;
        bpf_get_current_comm(&f->comm, sizeof(f->comm));
    }
    flow_add_bytes(f, ret, tx);
}

#if NET_BTF_OFFSETS
/* ret bytes moved by socket sk, where a hook has only the socket: a known flow costs one lookup; family
 * and protocol (BTF offsets) are read only for a socket not yet in the table. */
static __always_inline void account_sock(u64 sk, int ret, int tx)
{
    if (ret <= 0)
        return;
    struct flow *f = find_flow(sk);
    if (f && f->pid != 0) {
        flow_add_bytes(f, ret, tx);
        return;
    }
    u16 family = 0, protocol = 0, type = 0;
    bpf_probe_read_kernel(&family, sizeof(family), (void *)(sk + SK_FAMILY_OFFSET));
    bpf_probe_read_kernel(&protocol, sizeof(protocol), (void *)(sk + SK_PROTOCOL_OFFSET));
    bpf_probe_read_kernel(&type, sizeof(type), (void *)(sk + SK_TYPE_OFFSET));
    if (protocol == NET_PROTO_TCP && type != NET_SOCK_STREAM)
        return;  /* a raw socket opened with IPPROTO_TCP (nmap, hping): crafted packets, no connection
                  * whose state changes or destroy would ever fold a flow entry */
    account_io(sk, family, protocol, ret, tx);
}
#endif

/* Ports and addresses from a tracepoint that carries them as sport/dport,
 * saddr/daddr (IPv4) and saddr_v6/daddr_v6 (inet_sock_set_state and
 * tcp_retransmit_skb both do). A macro: the argument structs differ in type. */
#define FLOW_SET_ADDRS(f, args) do {                              \
        (f)->sport = (args)->sport;                               \
        (f)->dport = (args)->dport;                               \
        if ((args)->family == NET_AF_INET) {                      \
            __builtin_memcpy((f)->laddr, (args)->saddr, 4);       \
            __builtin_memcpy((f)->raddr, (args)->daddr, 4);       \
        } else {                                                  \
            __builtin_memcpy((f)->laddr, (args)->saddr_v6, 16);   \
            __builtin_memcpy((f)->raddr, (args)->daddr_v6, 16);   \
        }                                                         \
        (f)->has_addrs = 1;                                       \
    } while (0)

/* Move a flow's totals into the aggregate map (and, with spans on, send it).
 * live: sk is still this flow's socket (destroy, close), so its segment counts
 * are read a last time; not for an entry found stale at a reused address. */
static __always_inline void fold_flow(u64 sk, int live)
{
    u32 slot = 0;
    struct flow *f = find_flow_in(sk, &slot);
    if (!f)
        return;
    if (live && f->protocol == NET_PROTO_TCP)
        refresh_tcp_counters(sk, f);
    /* Only the CPU that takes the flow out of the table folds it (user space has stale ones folded too,
     * fold_stale_flow, and may have had this one taken meanwhile). */
    struct flow done;
    if (!take_flow(sk, f, slot, &done))
        return;
    if (done.tx_bytes == 0 && done.rx_bytes == 0 && done.retransmits == 0 && !done.established)
        return;
    struct agg_key key = {};
    struct agg_value v = {};
    key.pid = done.pid;
    key.family = done.family;
    key.protocol = done.protocol;
    __builtin_memcpy(key.laddr, done.laddr, NET_ADDR_LEN);
    __builtin_memcpy(key.raddr, done.raddr, NET_ADDR_LEN);
    __builtin_memcpy(key.comm, done.comm, NET_COMM_LEN);
    v.tx_bytes = done.tx_bytes;
    v.rx_bytes = done.rx_bytes;
    v.retransmits = done.retransmits;
    v.connections = done.established;
    v.tx_segments = done.segs_out;
    v.rx_segments = done.segs_in;
    agg_add(&key, &v);
#if NET_SPANS
    /* Only connections seen established become spans: a socket opened before the tracer has no known start. */
    u64 now = bpf_ktime_get_ns();
    if (!done.established || !span_budget_take(now))
        return;
    struct flow *e = conn_events.ringbuf_reserve(sizeof(struct flow));
    if (!e) {
        count_ringbuf_full();
        return;
    }
    __builtin_memcpy(e, &done, sizeof(struct flow));
    e->end_ns = now;
    conn_events.ringbuf_submit(e, ringbuf_wakeup_flags(sizeof(*e), RINGBUF_PAGES));
#endif
}

/* Run by user space (BPF_PROG_TEST_RUN) for a flow closed long ago whose destroy was never seen (args: the
 * socket's address, the start_ns user space read): folded as at a destroy, unless the slot holds another
 * socket's flow by now. */
int fold_stale_flow(struct bpf_raw_tracepoint_args *ctx)
{
    u64 sk = ctx->args[0];
    struct flow *f = find_flow(sk);
    if (!f || f->start_ns != ctx->args[1] || f->end_ns == 0)
        return 0;
    fold_flow(sk, 0);
    return 1;
}

/* ebpftool net: bytes per TCP flow and per process, retransmits and RTT, summed
 * in the kernel from sock/tcp tracepoints only (no kprobes on this kernel).
 * Fields come from the tracepoints' arguments, or, for the raw tracepoints,
 * from struct offsets the running kernel's BTF gives (never from headers).
 *
 *  - flows: one entry per TCP socket (key: the kernel's socket address),
 *    addresses from inet_sock_set_state at ESTABLISHED (or, for sockets
 *    opened before the tracer, from the first tcp_probe / retransmit),
 *    bytes from sock_send_length / sock_recv_length in the process's own
 *    context (so the pid there is the process that sent or read). Attached as
 *    raw tracepoints where the running kernel's BTF gives the offsets of a
 *    socket's family and protocol (NET_RAW_IO): a known flow then costs one
 *    lookup, without the perf tracepoint's record; the two fields are read only
 *    for a socket not (yet) in flows.
 *  - closed0/closed1: on tcp_destroy_sock (CLOSE where it is absent) a flow's totals are folded
 *    into one of these, keyed by (pid, comm, addresses) without ports, so no
 *    closed connection's bytes are lost. UDP (no connection state) is summed
 *    here per process directly, with the socket's addresses when it is
 *    connected (raw tracepoints; the perf tracepoints carry no addresses).
 *    User space drains the map that is not being written and flips
 *    `generation` once per interval, so a drain never races a writer.
 *  - rtt_hist: smoothed RTT from tcp_probe, sampled at most once per
 *    RTT_SAMPLE_JIFFIES per socket (tcp_probe fires on every incoming segment),
 *    per (local, remote) address pair, in the exported bucket bounds. Raw
 *    (NET_RAW_IO) where the BTF offsets are known: the RTT and, for a socket
 *    opened before the tracer, its addresses are then read from the socket.
 *
 * Compile-time parameters (from ebpftool/tracers/net.py):
 *   RTT_BUCKET(v)   bucket index of an RTT in ns (semconv TCP_RTT_BUCKETS)
 *   RTT_SAMPLE_JIFFIES  least kernel ticks between two RTT samples of one socket
 *   NET_SPANS       1: send each closed connection to user space (span budget)
 *   RINGBUF_PAGES   size of the connection-event ring buffer
 *   NET_UDP_DEST    1: an unconnected UDP socket's destination is read from the
 *                   sendto()/sendmsg() arguments (x86-64 syscall registers)
 *   NET_KPROBE_IO   1: bytes from kprobes on tcp/udp sendmsg/recvmsg instead, for
 *                   kernels without sock_send_length/sock_recv_length (before 6.3)
 *   NET_RAW_IO      1: raw sock_send_length/sock_recv_length and tcp_probe, with
 *   SK_*_OFFSET, TCP_*_OFFSET  from the kernel's BTF (ebpftool/core/btf.py)
 *   NET_HAVE_TCP_PROBE, NET_HAVE_TCP_RETRANSMIT_SKB, NET_HAVE_TCP_DESTROY_SOCK
 *                   1 where the kernel has that tracepoint (RTT, retransmits,
 *                   and a second close hook are optional; bytes are not)
 *   NET_RETRANSMIT_HAS_ERR 1 where tcp_retransmit_skb's record has `err`: it then
 *                   also fires for attempts that sent nothing, which are skipped
 */
#include <uapi/linux/ptrace.h>
#include "net.h"

#ifndef RTT_SAMPLE_JIFFIES
#define RTT_SAMPLE_JIFFIES 10
#endif
#ifndef NET_SPANS
#define NET_SPANS 0
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 64
#endif
#ifndef NET_RAW_IO
#define NET_RAW_IO 0
#endif
#ifndef NET_KPROBE_IO
#define NET_KPROBE_IO 0
#endif
#ifndef NET_UDP_DEST
#define NET_UDP_DEST 0
#endif
/* The BTF offsets of struct sock / tcp_sock are defined in both modes. */
#define NET_BTF_OFFSETS (NET_RAW_IO || NET_KPROBE_IO)
#ifndef NET_HAVE_TCP_PROBE
#define NET_HAVE_TCP_PROBE 1
#endif
#ifndef NET_HAVE_TCP_RETRANSMIT_SKB
#define NET_HAVE_TCP_RETRANSMIT_SKB 1
#endif
#ifndef NET_HAVE_TCP_DESTROY_SOCK
#define NET_HAVE_TCP_DESTROY_SOCK 1
#endif
#ifndef NET_RETRANSMIT_HAS_ERR
#define NET_RETRANSMIT_HAS_ERR 0
#endif
#ifndef RTT_BUCKET
#define RTT_BUCKET(v) 0
#endif

BPF_HASH(flows, u64, struct flow, NET_MAX_FLOWS);
BPF_HASH(closed0, struct agg_key, struct agg_value, NET_MAX_CLOSED);
BPF_HASH(closed1, struct agg_key, struct agg_value, NET_MAX_CLOSED);
BPF_ARRAY(generation, u32, 1);
BPF_PERCPU_HASH(rtt_hist, struct rtt_key, struct hist_value, NET_MAX_RTT_PEERS);
BPF_RINGBUF_OUTPUT(conn_events, RINGBUF_PAGES);

/* Add v to key in the aggregate map being written this interval. */
static __always_inline void agg_add(struct agg_key *key, struct agg_value *v)
{
    struct agg_value empty = {};
    struct agg_value *a;
    u32 zero = 0;
    u32 *gen = generation.lookup(&zero);
    if (gen && *gen)
        a = closed1.lookup_or_try_init(key, &empty);
    else
        a = closed0.lookup_or_try_init(key, &empty);
    if (!a) {
        stat_add(NET_STAT_CLOSED_FULL, 1);
        stat_add(NET_STAT_BYTES_LOST, v->tx_bytes + v->rx_bytes);
        return;
    }
    __sync_fetch_and_add(&a->tx_bytes, v->tx_bytes);
    __sync_fetch_and_add(&a->rx_bytes, v->rx_bytes);
    __sync_fetch_and_add(&a->retransmits, v->retransmits);
    __sync_fetch_and_add(&a->connections, v->connections);
    __sync_fetch_and_add(&a->tx_segments, v->tx_segments);
    __sync_fetch_and_add(&a->rx_segments, v->rx_segments);
}

/* The counters of TCP socket sk the flow follows (tcp_sock.segs_out, segs_in,
 * total_retrans). */
struct tcp_counters {
    u32 segs_out;
    u32 segs_in;
    u32 retrans;
};

static __always_inline void read_tcp_counters(u64 sk, struct tcp_counters *t)
{
#if NET_BTF_OFFSETS
    bpf_probe_read_kernel(&t->segs_out, sizeof(t->segs_out), (void *)(sk + TCP_SEGS_OUT_OFFSET));
    bpf_probe_read_kernel(&t->segs_in, sizeof(t->segs_in), (void *)(sk + TCP_SEGS_IN_OFFSET));
    bpf_probe_read_kernel(&t->retrans, sizeof(t->retrans), (void *)(sk + TCP_TOTAL_RETRANS_OFFSET));
#else
    t->segs_out = 0;  /* no BTF offsets: segments are not counted, retransmits are counted per event */
    t->segs_in = 0;
    t->retrans = 0;
#endif
}

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

#if NET_UDP_DEST
/* The destination a send on an unconnected UDP socket names: the sockaddr
 * passed to the sendto() or sendmsg() this send is part of, found through the
 * task's syscall registers (the program runs inside that call). Stored as the
 * socket's family stores it: an IPv6 socket sending to an IPv4 sockaddr gets
 * the v4-mapped address, as the kernel itself treats it. Other callers
 * (sendmmsg, io_uring, sendfile) leave it unknown. */
static __always_inline void udp_destination(u16 family, u8 *raddr)
{
    struct pt_regs *regs = CURRENT_SYSCALL_REGS();
    u64 name = 0;
    u64 nr = regs->orig_ax;
    if (nr == NR_SENDTO)
        name = regs->r8;                  /* sendto(fd, buf, len, flags, dest_addr, addrlen) */
    else if (nr == NR_SENDMSG)
        bpf_probe_read_user(&name, sizeof(name), (void *)regs->si);  /* struct user_msghdr: msg_name first */
    if (!name)
        return;
    struct {
        u16 family;
        u16 port;
        u8 v4[4];                         /* sockaddr_in's address; sockaddr_in6's flowinfo */
    } head = {};
    if (bpf_probe_read_user(&head, sizeof(head), (void *)name) != 0)
        return;
    if (head.family == NET_AF_INET && family == NET_AF_INET) {
        __builtin_memcpy(raddr, head.v4, 4);
    } else if (head.family == NET_AF_INET && family == NET_AF_INET6) {
        raddr[10] = 0xff;
        raddr[11] = 0xff;
        __builtin_memcpy(raddr + 12, head.v4, 4);
    } else if (head.family == NET_AF_INET6 && family == NET_AF_INET6) {
        bpf_probe_read_user(raddr, NET_ADDR_LEN, (void *)(name + 8));  /* sin6_addr */
    }
}
#endif

/* I/O with no flow entry (UDP and other non-TCP sockets, or the flow map full):
 * summed per process and address pair. The addresses are the socket's own,
 * read at BTF offsets (raw tracepoints): known for a connected socket (UDP
 * after connect(), as DNS stubs and QUIC clients use them). A socket that names
 * its peer per call has no peer address: for its sends, the destination comes
 * from the call's arguments (NET_UDP_DEST); for its receives it stays unknown
 * (the kernel copies the sender's address out only after this hook). */
static __always_inline void account_unkeyed(u64 sk, u16 family, u16 protocol, u32 bytes, int tx)
{
    struct agg_key key = {};
    struct agg_value v = {};
    key.pid = bpf_get_current_pid_tgid() >> 32;
    key.family = family;
    key.protocol = protocol;
#if NET_BTF_OFFSETS
    if (family == NET_AF_INET) {
        bpf_probe_read_kernel(key.laddr, 4, (void *)(sk + SK_RCV_SADDR_OFFSET));
        bpf_probe_read_kernel(key.raddr, 4, (void *)(sk + SK_DADDR_OFFSET));
    } else {
        bpf_probe_read_kernel(key.laddr, 16, (void *)(sk + SK_V6_RCV_SADDR_OFFSET));
        bpf_probe_read_kernel(key.raddr, 16, (void *)(sk + SK_V6_DADDR_OFFSET));
    }
#endif
#if NET_UDP_DEST
    u32 *r = (u32 *)key.raddr;  /* struct agg_key is 4-byte aligned */
    if (tx && protocol == NET_PROTO_UDP && (r[0] | r[1] | r[2] | r[3]) == 0)
        udp_destination(family, key.raddr);
#endif
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    if (tx)
        v.tx_bytes = bytes;
    else
        v.rx_bytes = bytes;
    agg_add(&key, &v);
}

/* The flow of a TCP socket, created empty when the socket is new to us. */
static __always_inline struct flow *flow_of(u64 sk, u16 family)
{
    struct flow *f = flows.lookup(&sk);
    if (f)
        return f;
    struct flow init = {};
    init.family = family;
    init.protocol = NET_PROTO_TCP;
    init.start_ns = bpf_ktime_get_ns();
    struct tcp_counters t = {};
    read_tcp_counters(sk, &t);
    init.segs_out_base = t.segs_out;
    init.segs_in_base = t.segs_in;
    init.retrans_base = t.retrans;
    flows.insert(&sk, &init);   /* fails only when another CPU won the race or the map is full */
    return flows.lookup(&sk);
}

/* Atomic: two threads may use one socket on two CPUs at once. */
static __always_inline void flow_add_bytes(struct flow *f, int ret, int tx)
{
    if (tx)
        __sync_fetch_and_add(&f->tx_bytes, (u64)ret);
    else
        __sync_fetch_and_add(&f->rx_bytes, (u64)ret);
}

static __always_inline void account_io(u64 sk, u16 family, u16 protocol, int ret, int tx)
{
    if (ret <= 0 || (family != NET_AF_INET && family != NET_AF_INET6))
        return;
    if (protocol != NET_PROTO_TCP) {
        account_unkeyed(sk, family, protocol, ret, tx);
        return;
    }
    struct flow *f = flow_of(sk, family);
    if (!f) {
        stat_add(NET_STAT_FLOWS_FULL, 1);
        account_unkeyed(sk, family, protocol, ret, tx);
        return;
    }
    if (f->pid == 0) {
        f->pid = bpf_get_current_pid_tgid() >> 32;
        bpf_get_current_comm(&f->comm, sizeof(f->comm));
    }
    flow_add_bytes(f, ret, tx);
}

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

#if NET_BTF_OFFSETS
/* ret bytes moved by socket sk: a known flow costs one lookup; family and
 * protocol (BTF offsets) are read only for a socket not yet in flows. */
static __always_inline void account_sock(u64 sk, int ret, int tx)
{
    if (ret <= 0)
        return;
    struct flow *f = flows.lookup(&sk);
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

#if NET_RAW_IO
/* TP_PROTO(struct sock *sk, int ret, int flags) */
RAW_TRACEPOINT_PROBE(sock_send_length)
{
    account_sock(ctx->args[0], (int)ctx->args[1], 1);
    return 0;
}

RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    if ((int)ctx->args[2] & RECV_NOT_FROM_STREAM)
        return 0;
    account_sock(ctx->args[0], (int)ctx->args[1], 0);
    return 0;
}
#elif NET_KPROBE_IO
/* Kernels without the sock_*_length tracepoints (before 6.3) but with kprobes:
 * tcp_sendmsg/udp_sendmsg/udpv6_sendmsg and the recvmsg functions all take the
 * socket first and return the bytes moved, as bcc's tcptop reads them (and, as
 * tcptop, count a MSG_PEEK read: the flags' position differs between versions). The
 * socket is kept per thread from entry to return (they do not nest). Attached
 * by ebpftool/tracers/net.py (KPROBE_FUNCTIONS). */
BPF_HASH(io_in_flight, u32, u64, 16384);

int kprobe_io_entry(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 sk = PT_REGS_PARM1(ctx);
    io_in_flight.update(&tid, &sk);
    return 0;
}

static __always_inline int kprobe_io_return(struct pt_regs *ctx, int tx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 *sk = io_in_flight.lookup(&tid);
    if (!sk)
        return 0;
    u64 s = *sk;
    io_in_flight.delete(&tid);
    account_sock(s, (int)PT_REGS_RC(ctx), tx);
    return 0;
}

int kprobe_send_return(struct pt_regs *ctx) { return kprobe_io_return(ctx, 1); }
int kprobe_recv_return(struct pt_regs *ctx) { return kprobe_io_return(ctx, 0); }
#else
TRACEPOINT_PROBE(sock, sock_send_length)
{
    account_io((u64)args->sk, args->family, args->protocol, args->ret, 1);
    return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
    if (args->flags & RECV_NOT_FROM_STREAM)
        return 0;
    account_io((u64)args->sk, args->family, args->protocol, args->ret, 0);
    return 0;
}
#endif

/* Move a flow's totals into the aggregate map (and, with spans on, send it).
 * live: sk is still this flow's socket (destroy, close), so its segment counts
 * are read a last time; not for an entry found stale at a reused address. */
static __always_inline void fold_flow(u64 sk, int live)
{
    struct flow *f = flows.lookup(&sk);
    if (!f)
        return;
    if (live && f->protocol == NET_PROTO_TCP)
        refresh_tcp_counters(sk, f);
    /* Copy before deleting: preallocated hash elements are reused at once.
     * Only the one that deletes the entry folds it (user space folds entries
     * whose destroy was missed, and may have deleted this one meanwhile). */
    struct flow done = *f;
    if (flows.delete(&sk) != 0)
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

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != NET_PROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    /* A socket in CLOSE may still hold unread data (e.g. the answer that came
     * with the peer's FIN after our shutdown): fold it when it is destroyed,
     * and at CLOSE only where the kernel has no tcp_destroy_sock. */
    if (args->newstate == NET_TCP_CLOSE) {
        if (!NET_HAVE_TCP_DESTROY_SOCK) {
            fold_flow(sk, 1);
            return 0;
        }
        struct flow *closing = flows.lookup(&sk);
        if (closing)
            closing->end_ns = bpf_ktime_get_ns();   /* user space folds it if the destroy is never seen */
        return 0;
    }
    if (args->newstate != NET_TCP_ESTABLISHED)
        return 0;
    /* A socket is established once: an entry that already was, or that reached
     * CLOSE, belongs to an earlier socket at this address whose destroy was
     * missed (a softirq-context program can be skipped while another BPF
     * program runs on that CPU). Fold it before reusing the key. An entry with
     * bytes and neither is this socket's own I/O before the handshake ended
     * (TCP Fast Open: data in the SYN, read in SYN_RECV): kept. */
    struct flow *stale = flows.lookup(&sk);
    if (stale && (stale->established || stale->end_ns))
        fold_flow(sk, 0);
    struct flow *f = flow_of(sk, args->family);
    if (!f) {
        stat_add(NET_STAT_FLOWS_FULL, 1);
        return 0;
    }
    f->established = 1;
    f->end_ns = 0;
    f->is_client = args->oldstate == NET_TCP_SYN_SENT;
    f->start_ns = bpf_ktime_get_ns();
    f->family = args->family;
    FLOW_SET_ADDRS(f, args);
    return 0;
}

#if NET_HAVE_TCP_DESTROY_SOCK
TRACEPOINT_PROBE(tcp, tcp_destroy_sock)
{
    fold_flow((u64)args->skaddr, 1);
    return 0;
}
#endif

#if NET_HAVE_TCP_RETRANSMIT_SKB
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
#if NET_RETRANSMIT_HAS_ERR
    if (args->err != 0)
        return 0;  /* nothing was sent again (e.g. EBUSY: the first copy is still queued); not in total_retrans */
#endif
    struct flow *f = flow_of((u64)args->skaddr, args->family);
    if (!f) {
        stat_add(NET_STAT_FLOWS_FULL, 1);
        return 0;
    }
    if (!f->has_addrs) {
        FLOW_SET_ADDRS(f, args);
    }
#if NET_BTF_OFFSETS
    /* total_retrans is raised after this event, by the packet's segments: the
     * next refresh (an RTT sample, or the fold) counts them. */
    refresh_tcp_counters((u64)args->skaddr, f);
#else
    __sync_fetch_and_add(&f->retransmits, 1);
#endif
    return 0;
}
#endif

#if NET_HAVE_TCP_PROBE
/* One RTT sample of flow f (smoothed RTT in us), into its address pair's histogram. */
static __always_inline void sample_rtt(struct flow *f, u32 srtt_us)
{
    f->srtt_us = srtt_us;
    struct rtt_key key = {};
    key.family = f->family;
    __builtin_memcpy(key.laddr, f->laddr, NET_ADDR_LEN);
    __builtin_memcpy(key.raddr, f->raddr, NET_ADDR_LEN);
    struct hist_value zero = {};
    struct hist_value *h = rtt_hist.lookup_or_try_init(&key, &zero);
    if (!h) {
        stat_add(NET_STAT_RTT_PEERS_FULL, 1);
        return;
    }
    u64 rtt_ns = (u64)srtt_us * 1000;
    hist_add(h, RTT_BUCKET(rtt_ns), rtt_ns);
}

/* The rate limit runs for every segment received: kept in jiffies, whose
 * read the verifier inlines (bpf_ktime_get_ns() is a helper call that reads
 * the clock source: ~50 ns more per segment here). */
static __always_inline int rtt_sample_due(struct flow *f)
{
    u64 now = bpf_jiffies64();
    if (now - f->rtt_sampled_jiffies < RTT_SAMPLE_JIFFIES)
        return 0;
    f->rtt_sampled_jiffies = now;
    return 1;
}

#if NET_BTF_OFFSETS
/* TP_PROTO(struct sock *sk, const struct sk_buff *skb). Fires on every segment
 * a TCP socket receives in ESTABLISHED: attached raw, the perf tracepoint's
 * record (addresses, a dozen tcp_sock fields, the socket cookie) is never
 * built; the fields wanted are read at their BTF offsets, the addresses once
 * per flow and the smoothed RTT once per sample. */
RAW_TRACEPOINT_PROBE(tcp_probe)
{
    u64 sk = ctx->args[0];
    struct flow *f = flows.lookup(&sk);
    if (!f)
        return 0;   /* sockets get a flow from their first send or receive */
    if (!f->has_addrs) {
        if (f->family == NET_AF_INET) {
            bpf_probe_read_kernel(f->laddr, 4, (void *)(sk + SK_RCV_SADDR_OFFSET));
            bpf_probe_read_kernel(f->raddr, 4, (void *)(sk + SK_DADDR_OFFSET));
        } else {
            bpf_probe_read_kernel(f->laddr, 16, (void *)(sk + SK_V6_RCV_SADDR_OFFSET));
            bpf_probe_read_kernel(f->raddr, 16, (void *)(sk + SK_V6_DADDR_OFFSET));
        }
        u16 num = 0, dport_be = 0;
        bpf_probe_read_kernel(&num, sizeof(num), (void *)(sk + SK_NUM_OFFSET));
        bpf_probe_read_kernel(&dport_be, sizeof(dport_be), (void *)(sk + SK_DPORT_OFFSET));
        f->sport = num;
        f->dport = (dport_be >> 8) | ((dport_be & 0xff) << 8);
        f->has_addrs = 1;
    }
    if (!rtt_sample_due(f))
        return 0;
    u32 srtt_us8 = 0;  /* tcp_sock.srtt_us holds 8 times the smoothed RTT (the tracepoint's srtt is >> 3) */
    bpf_probe_read_kernel(&srtt_us8, sizeof(srtt_us8), (void *)(sk + TCP_SRTT_US_OFFSET));
    sample_rtt(f, srtt_us8 >> 3);
    refresh_tcp_counters(sk, f);  /* open flows' segment and retransmit counts: as fresh as the last RTT sample */
    return 0;
}
#else
TRACEPOINT_PROBE(tcp, tcp_probe)
{
    u64 sk = (u64)args->skaddr;
    struct flow *f = flows.lookup(&sk);
    if (!f)
        return 0;   /* sockets get a flow from their first send or receive */
    if (!f->has_addrs) {
        /* saddr/daddr hold a sockaddr_in (address at byte 4) or sockaddr_in6 (at byte 8). */
        if (args->family == NET_AF_INET) {
            __builtin_memcpy(f->laddr, &args->saddr[4], 4);
            __builtin_memcpy(f->raddr, &args->daddr[4], 4);
        } else {
            __builtin_memcpy(f->laddr, &args->saddr[8], 16);
            __builtin_memcpy(f->raddr, &args->daddr[8], 16);
        }
        f->sport = args->sport;
        f->dport = args->dport;
        f->has_addrs = 1;
    }
    if (rtt_sample_due(f))
        sample_rtt(f, args->srtt);
    return 0;
}
#endif
#endif

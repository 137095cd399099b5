/* TCP's tracepoints: a connection established or closed (inet_sock_set_state), destroyed
 * (tcp_destroy_sock), a segment sent again (tcp_retransmit_skb), a segment received (tcp_probe: RTT). */

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
        struct flow *closing = find_flow(sk);
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
    struct flow *stale = find_flow(sk);
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
#if NET_BTF_OFFSETS
/* TP_PROTO(struct sock *sk, const struct sk_buff *skb). Fires on every segment
 * a TCP socket receives in ESTABLISHED: attached raw, the perf tracepoint's
 * record (addresses, a dozen tcp_sock fields, the socket cookie) is never
 * built; the fields wanted are read at their BTF offsets, the addresses once
 * per flow and the smoothed RTT once per sample. */
RAW_TRACEPOINT_PROBE(tcp_probe)
{
    u64 sk = ctx->args[0];
    struct flow *f = find_flow(sk);
    if (!f)
        return 0;   /* sockets get a flow from their first send or receive */
    if (!f->has_addrs) {
        read_sock_addrs(sk, f->family, f->laddr, f->raddr);
        read_sock_ports(sk, &f->sport, &f->dport);
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
    struct flow *f = find_flow(sk);
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

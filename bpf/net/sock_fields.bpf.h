/* A socket's fields read at the offsets the running kernel's BTF gives (SK_*_OFFSET, TCP_*_OFFSET, defined
 * for the raw tracepoints and the kprobes: NET_BTF_OFFSETS): addresses, ports, TCP's segment counters. */

#if NET_BTF_OFFSETS
/* The socket's local and remote addresses, as many bytes as its family's address has. */
static __always_inline void read_sock_addrs(u64 sk, u16 family, u8 *laddr, u8 *raddr)
{
    if (family == NET_AF_INET) {
        bpf_probe_read_kernel(laddr, 4, (void *)(sk + SK_RCV_SADDR_OFFSET));
        bpf_probe_read_kernel(raddr, 4, (void *)(sk + SK_DADDR_OFFSET));
    } else {
        bpf_probe_read_kernel(laddr, 16, (void *)(sk + SK_V6_RCV_SADDR_OFFSET));
        bpf_probe_read_kernel(raddr, 16, (void *)(sk + SK_V6_DADDR_OFFSET));
    }
}

/* The socket's ports in host order (the kernel keeps the local one, skc_num, in host order and the
 * remote one, skc_dport, in network order). */
static __always_inline void read_sock_ports(u64 sk, u16 *sport, u16 *dport)
{
    u16 num = 0, dport_be = 0;
    bpf_probe_read_kernel(&num, sizeof(num), (void *)(sk + SK_NUM_OFFSET));
    bpf_probe_read_kernel(&dport_be, sizeof(dport_be), (void *)(sk + SK_DPORT_OFFSET));
    *sport = num;
    *dport = (dport_be >> 8) | ((dport_be & 0xff) << 8);
}
#endif

/* The counters of a TCP socket that its flow follows (tcp_sock.segs_out, segs_in, total_retrans). */
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

/* The aggregate of this interval (closed0 or closed1, as `generation` says): closed flows' totals and the
 * I/O that has no flow (UDP and other non-TCP sockets, or TCP when the flow map is full), per process
 * and address pair. */

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

/* bytes moved (tx: sent) by socket sk, which has no flow: summed per process and address pair. The
 * addresses are the socket's own, read at BTF offsets (raw tracepoints, kprobes): known for a connected
 * socket (UDP after connect(), as DNS stubs and QUIC clients use them). A socket that names its peer per
 * call has no peer address: for its sends, the destination comes from the call's arguments
 * (NET_UDP_DEST); for its receives it stays unknown (the kernel copies the sender's address out only
 * after this hook). */
static __always_inline void account_without_flow(u64 sk, u16 family, u16 protocol, u32 bytes, int tx)
{
    struct agg_key key = {};
    struct agg_value v = {};
    key.pid = bpf_get_current_pid_tgid() >> 32;
    key.family = family;
    key.protocol = protocol;
#if NET_BTF_OFFSETS
    read_sock_addrs(sk, family, key.laddr, key.raddr);
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

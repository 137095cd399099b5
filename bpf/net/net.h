/* Layouts shared by bpf/net/ and ebpftool/tracers/net/ (parsed by
 * ebpftool/core/cstruct.py: fixed-width fields and numeric #defines only). */
#define NET_ADDR_LEN 16        /* IPv4 uses the first 4 bytes */
#define NET_COMM_LEN 16
#define NET_AF_INET 2
#define NET_AF_INET6 10
#define NET_PROTO_TCP 6
#define NET_PROTO_UDP 17
#define NET_TCP_ESTABLISHED 1
#define NET_TCP_SYN_SENT 2
#define NET_SOCK_STREAM 1
#define NET_TCP_CLOSE 7
/* Slots of the open-flow table (1 << NET_FLOW_TABLE_BITS, 152 bytes each): twice the open TCP sockets it
 * should hold, as its probing refuses ~2% of new sockets at half full (docs/net.md). */
#define NET_FLOW_TABLE_BITS 17
#define NET_MAX_FLOWS 131072
#define NET_FLOW_CLAIMED 1     /* a slot's key while the CPU that folds its flow empties it */
#define NET_MAX_CLOSED 16384   /* distinct closed-flow keys per export interval */
#define NET_MAX_RTT_PEERS 4096 /* distinct (local, remote) address pairs with an RTT histogram */

/* Tracer slots of the shared `stats` array (STAT_TRACER_BASE is 2). */
#define NET_STAT_FLOWS_FULL 2      /* TCP I/O on a socket the flow map had no room for (counted as unattributed) */
#define NET_STAT_CLOSED_FULL 3     /* a closed flow found no room in the aggregate map */
#define NET_STAT_BYTES_LOST 4      /* bytes of such flows, lost to the metrics */
#define NET_STAT_RTT_PEERS_FULL 5  /* RTT samples with no room for their address pair */

/* One TCP socket, a slot of `flows` (its key the kernel's socket address); also the
 * connection event sent on close when spans are on (end_ns set then). */
struct flow {
    __u64 sk;          /* the socket's address: the slot's key (0: a free slot; NET_FLOW_CLAIMED: being emptied) */
    __u64 start_ns;
    __u64 end_ns;      /* when it reached CLOSE (then, in a connection event, when it was destroyed) */
    __u64 tx_bytes;
    __u64 rx_bytes;
    /* Segments sent again. With BTF offsets: tcp_sock.total_retrans minus its value when the flow was
     * first seen, refreshed like the segment counts (a retransmitted packet may carry several segments);
     * without: one per tcp_retransmit_skb event. */
    __u64 retransmits;
    __u64 rtt_sampled_jiffies;
    __u32 srtt_us;
    __u32 pid;
    /* TCP segments sent and received (tcp_sock.segs_out/segs_in, all segments,
     * pure ACKs and retransmits included) since the flow was first seen: the
     * socket's counters minus their values then. Raw tracepoints only (BTF
     * offsets); refreshed with each RTT sample and when the socket is folded. */
    __u32 segs_out;
    __u32 segs_in;
    __u32 segs_out_base;
    __u32 segs_in_base;
    __u32 retrans_base;
    __u32 pad0;
    __u16 family;
    __u16 protocol;
    __u16 sport;
    __u16 dport;
    __u8 laddr[NET_ADDR_LEN];
    __u8 raddr[NET_ADDR_LEN];
    __u8 has_addrs;
    __u8 established;
    __u8 is_client;    /* 1: this side opened the connection (SYN_SENT -> ESTABLISHED) */
    __u8 pad[5];
    char comm[NET_COMM_LEN];
};

/* Closed TCP flows and all UDP traffic, summed per process and address pair
 * (ports dropped: ephemeral ports would make the map grow without bound). */
struct agg_key {
    __u32 pid;
    __u16 family;
    __u16 protocol;
    __u8 laddr[NET_ADDR_LEN];
    __u8 raddr[NET_ADDR_LEN];
    char comm[NET_COMM_LEN];
};

struct agg_value {
    __u64 tx_bytes;
    __u64 rx_bytes;
    __u64 retransmits;
    __u64 connections;
    __u64 tx_segments;
    __u64 rx_segments;
};

/* Key of the RTT histograms: user space maps the pair to a zone pair. */
struct rtt_key {
    __u32 family;
    __u8 laddr[NET_ADDR_LEN];
    __u8 raddr[NET_ADDR_LEN];
};

/* The net tracer's maps: the table of open TCP flows, the two generations of closed-flow aggregates, RTT histograms
 * and the connection-event ring buffer (the kprobe way in adds its own table, in hooks_io.bpf.h). */

/* Open TCP flows: a table whose slots are found by a hash of the socket's address (flow_table.bpf.h), and
 * a bit per occupied slot, so that user space reads only those. */
BPF_ARRAY(flows, struct flow, NET_MAX_FLOWS);
BPF_ARRAY(flow_used, u64, NET_MAX_FLOWS / 64);
/* Closed flows and flowless I/O per (pid, comm, addresses): `generation` says which of the two the
 * kernel writes; user space drains the other one, then flips it (once per interval). */
BPF_HASH(closed0, struct agg_key, struct agg_value, NET_MAX_CLOSED);
BPF_HASH(closed1, struct agg_key, struct agg_value, NET_MAX_CLOSED);
BPF_ARRAY(generation, u32, 1);
BPF_PERCPU_HASH(rtt_hist, struct rtt_key, struct hist_value, NET_MAX_RTT_PEERS);
BPF_RINGBUF_OUTPUT(conn_events, RINGBUF_PAGES);                 /* closed connections, as spans (NET_SPANS) */

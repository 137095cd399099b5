/* ebpftool net: bytes per TCP flow and per process, retransmits and RTT, summed
 * in the kernel from sock/tcp tracepoints (kprobes only as the byte counters'
 * fallback on kernels before 6.3). Fields come from the tracepoints' arguments,
 * or, for the raw tracepoints and kprobes, from struct offsets the running
 * kernel's BTF gives (never from headers).
 *
 *  - flows: one slot per TCP socket (key: the kernel's socket address; flow_table.bpf.h),
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
 * The parts (joined by the loader in this order):
 *   maps.bpf.h          the maps: open flows, the closed-flow aggregates, RTT histograms, connection events
 *   flow_table.bpf.h    the open-flow table: a socket's slot found, claimed, taken out
 *   sock_fields.bpf.h   a socket's fields at BTF offsets: addresses, ports, TCP segment counters
 *   udp_dest.bpf.h      an unconnected UDP send's destination, from the syscall's arguments
 *   aggregate.bpf.h     the closed-flow aggregate of this interval, and I/O that has no flow
 *   flows.bpf.h         a TCP socket's flow: its bytes, its counters, its fold into the aggregate at close
 *   rtt.bpf.h           RTT samples into the address pair's histogram, at most one per RTT_SAMPLE_JIFFIES
 *   hooks_io.bpf.h      the byte counters' way in: raw tracepoints, kprobes or tracepoints
 *   hooks_tcp.bpf.h     TCP's tracepoints: state changes, destroy, retransmits, tcp_probe (RTT)
 * A new way to count bytes is a variant in hooks_io.bpf.h calling account_io() or account_sock().
 *
 * Compile-time parameters (from ebpftool/tracers/net/tracer.py, plans in plans.py):
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
#ifndef NET_RECV_FLAGS_PARM
#define NET_RECV_FLAGS_PARM 0
#endif
/* Both the raw tracepoints and the kprobes are given struct sock / tcp_sock's BTF offsets. */
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

/* The parts, each a file of this folder. The loader joins them into one text (BCC rewrites map calls
 * only in its main text), with #line markers so that errors name the right file and line. */
#include "maps.bpf.h"
#include "sock_fields.bpf.h"
#include "udp_dest.bpf.h"
#include "aggregate.bpf.h"
#include "flow_table.bpf.h"
#include "flows.bpf.h"
#include "rtt.bpf.h"
#include "hooks_io.bpf.h"
#include "hooks_tcp.bpf.h"

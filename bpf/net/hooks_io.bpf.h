/* The byte counters' way in, one of three (the plan, ebpftool/tracers/net/plans.py, picks it):
 *  - NET_RAW_IO: raw sock_send_length / sock_recv_length, the socket's fields at BTF offsets;
 *  - NET_KPROBE_IO: kprobes on the protocols' sendmsg/recvmsg (kernels before 6.3);
 *  - otherwise: the sock_send_length / sock_recv_length tracepoints, family and protocol in their record. */

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
 * socket first and return the bytes moved, as bcc's tcptop reads them. A read with
 * MSG_PEEK or MSG_ERRQUEUE is not counted, as on the tracepoints: the recvmsg
 * functions' flags are parameter NET_RECV_FLAGS_PARM (1-based; 5.19 removed the
 * `noblock` before them), found in the kernel's BTF; 0 where it could not be (peeks
 * then count, as in tcptop). The socket is kept per thread from entry to return
 * (they do not nest). Attached by ebpftool/tracers/net/tracer.py
 * (plans.KPROBE_FUNCTIONS). */
BPF_HASH(io_in_flight, u32, u64, 16384);  /* thread id -> the socket its sendmsg/recvmsg works on */

static __always_inline int remember_socket(struct pt_regs *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 sk = PT_REGS_PARM1(ctx);
    io_in_flight.update(&tid, &sk);
    return 0;
}

int kprobe_io_entry(struct pt_regs *ctx) { return remember_socket(ctx); }

#if NET_RECV_FLAGS_PARM == 4
#define RECV_FLAGS(ctx) PT_REGS_PARM4(ctx)
#elif NET_RECV_FLAGS_PARM == 5
#define RECV_FLAGS(ctx) PT_REGS_PARM5(ctx)
#endif

int kprobe_recv_entry(struct pt_regs *ctx)
{
#ifdef RECV_FLAGS
    if ((int)RECV_FLAGS(ctx) & RECV_NOT_FROM_STREAM) {
        u32 tid = bpf_get_current_pid_tgid();
        io_in_flight.delete(&tid);  /* its return finds nothing to count */
        return 0;
    }
#endif
    return remember_socket(ctx);
}

static __always_inline int kprobe_io_return(struct pt_regs *ctx, int tx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 *entered = io_in_flight.lookup(&tid);
    if (!entered)
        return 0;
    u64 sk = *entered;
    io_in_flight.delete(&tid);
    account_sock(sk, (int)PT_REGS_RC(ctx), tx);
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

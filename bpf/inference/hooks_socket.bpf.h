/* The way in through the socket's own tracepoints (Linux 6.3+): reads on sock_recv_length, writes on
 * tcp_sendmsg_locked (tp_btf) or sock_send_length, connections from sock:inet_sock_set_state, a
 * request's first byte from sock:sk_data_ready. Each on a BTF tracepoint or a raw one, chosen at load. */

#define EAGAIN 11
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_LAST_ACK 9
#define IPPROTO_TCP 6
#define SYSCALL_REGS_OFFSET_MAX (1 << 20)  /* far above any kernel stack size: a wrong measure is dropped */

#if RECV_HOOK_BTF
/* bpf_rdonly_cast(obj, btf_id) (a kfunc, Linux 6.2+): the verifier turns the number obj into a read-only
 * pointer to the kernel type btf_id and the call into nothing; loads through it are fault-safe. BCC
 * cannot emit a kfunc call, so this calls the placeholder helper number KFUNC_RDONLY_CAST (the way C
 * calls a helper: through its number as a function pointer), which ebpftool/core/bpf.py rewrites into
 * the kfunc call when it loads the program. */
static void *(*rdonly_cast)(u64 obj, u32 btf_id) = (void *)KFUNC_RDONLY_CAST;

/* Where the current task's saved syscall registers lie. task_pt_regs() is the top of the task's kernel
 * stack: task->stack plus a constant of the kernel's build (THREAD_SIZE less its padding and the struct),
 * which user space measures once by running calibrate_syscall_regs (BPF_PROG_TEST_RUN) against
 * bpf_task_pt_regs(); the hooks then add it, sparing that helper call (~20 ns). 0: not measured. */
BPF_ARRAY(syscall_regs_offset, u64, 1);

int calibrate_syscall_regs(struct bpf_raw_tracepoint_args *ctx)
{
    void *task = bpf_get_current_task_btf();
    u64 regs = (u64)bpf_task_pt_regs(task);
    u64 stack = *(u64 *)(task + TASK_STACK_OFF);
    u32 zero = 0;
    u64 *offset = syscall_regs_offset.lookup(&zero);
    if (offset && regs > stack && regs - stack < SYSCALL_REGS_OFFSET_MAX)
        *offset = regs - stack;
    return 0;
}

static __always_inline struct pt_regs *syscall_regs(void)
{
    void *task = bpf_get_current_task_btf();
    u32 zero = 0;
    u64 *offset = syscall_regs_offset.lookup(&zero);
    if (!offset || *offset == 0)
        return (struct pt_regs *)bpf_task_pt_regs(task);
    return rdonly_cast(*(u64 *)(task + TASK_STACK_OFF) + *offset, PT_REGS_BTF_ID);
}
#else
static __always_inline struct pt_regs *syscall_regs(void)
{
    return CURRENT_SYSCALL_REGS();
}
#endif

/* The buffer of the read or write syscall this socket operation is part of:
 * *how says how to find the bytes, 0 when the caller is not one of these
 * syscalls (sendfile, splice, io_uring: counted, not parsed). */
static __always_inline u64 syscall_buffer(u32 *how)
{
    struct pt_regs *regs = syscall_regs();
    u64 buf = regs->si;
    *how = BUF_NONE;
    switch (regs->orig_ax) {
    case NR_READ: case NR_WRITE: case NR_RECVFROM: case NR_SENDTO:
        *how = BUF_PLAIN;
        return buf;
    case NR_READV: case NR_WRITEV:
        *how = BUF_IOV;
        return buf;
    case NR_RECVMSG: case NR_SENDMSG:
        *how = BUF_MSG;
        return buf;
    }
    return 0;
}

#if SEND_HOOK_BTF || RECV_HOOK_BTF
/* The BTF tracepoints' socket argument is a typed pointer, on which the verifier allows no arithmetic,
 * and the connection table hashes the socket's address: stored in a map and read back, it is a plain
 * number. */
BPF_PERCPU_ARRAY(sock_address, u64, 1);

static __always_inline u64 address_of(u64 typed_pointer)
{
    u32 zero = 0;
    u64 *scratch = sock_address.lookup(&zero);
    if (!scratch)
        return 0;
    *(volatile u64 *)scratch = typed_pointer;
    return *(volatile u64 *)scratch;
}
#endif

#if RECV_HOOK_BTF
/* When the read returned: TCP's own clock of the socket (tcp_sock.tcp_clock_cache, CLOCK_MONOTONIC
 * like bpf_ktime_get_ns()), which the read refreshed as it copied the bytes out (tcp_recvmsg ->
 * tcp_rcv_space_adjust -> tcp_mstamp_refresh), a few hundred ns before this hook: no clock read here
 * (a helper call, ~45 ns on this benchmark's CPU). Only for sockets in the connection table: TCP. */
static __always_inline u64 read_time(u64 sk)
{
    void *tp = rdonly_cast(sk, TCP_SOCK_BTF_ID);
    return *(u64 *)(tp + TCP_CLOCK_CACHE_OFF);
}

/* The bytes in sk's receive queue, not read yet (queued_count()), by direct loads. */
static __always_inline u32 queued_bytes(u64 sk)
{
#ifdef TCP_COPIED_SEQ_OFF
    void *tp = rdonly_cast(sk, TCP_SOCK_BTF_ID);
    return queued_count(*(u32 *)(tp + TCP_RCV_NXT_OFF), *(u32 *)(tp + TCP_COPIED_SEQ_OFF));
#else
    return 0;  /* not known: an HTTP/2 read is timed by its latest arrival */
#endif
}
#else
static __always_inline u64 read_time(u64 sk)
{
    return bpf_ktime_get_ns();
}

static __always_inline u32 queued_bytes(u64 sk)
{
    return probe_queued_bytes(sk);
}
#endif

/* A read of socket sk returned ret (bytes, or an error) with these recv() flags. */
static __always_inline int socket_read(void *ctx, u64 sk, int ret, u64 flags)
{
    if (ret <= 0 && ret != -EAGAIN)
        return 0;
    struct conn_state *c = sock_conn(sk);
    if (!c)
        return 0;
    if (ret < 0) {
        /* The server reads again after it began answering: the answer is complete
         * (an idle keep-alive connection must not hold its last request back). It
         * ended at its last write (resp_end, set with resp_start): no clock read. */
        if (c->resp_start != 0)
            finish_request(&sk, c, c->resp_end);
        return 0;
    }
    if (flags & RECV_NOT_FROM_STREAM)
        return 0;  /* a peek's bytes will be read again; the error queue holds the socket's own timestamps */
    arrival_take(c);
    u32 how, len = 0;
    u64 iov_array;
#if TLS_HOOKS
    if (c->tls) {
        /* ciphertext: the plaintext comes at the library call's return */
        if (ret > 0 && tls_read_outside_call(sk, c) && (c->arrival != 0 || c->tls == TLS_BIO_UNKNOWN)) {
            u64 arg = syscall_buffer(&how);
            u64 ptr = first_buffer(how, arg, ret, &len, &iov_array);
            if (c->arrival != 0 && ptr && tls_handshake_only(ptr, len))
                c->arrival = 0;  /* the handshake's bytes arrived: not a request's */
            tls_note_data(c, ptr);
        }
        return 0;
    }
#endif
    u64 now = read_time(sk);
    u64 arg = syscall_buffer(&how);
    u64 ptr = first_buffer(how, arg, ret, &len, &iov_array);
    int next = ptr && len ? on_read(&sk, c, ptr, len, now) : READ_DONE;
    if (next == READ_LET_GO)
        forget_connection(sk);
    else if (next == READ_H2)
        h2_bytes(ctx, H2_VIA_READ, &sk, c, H2_FROM_CLIENT, ptr, len, ret, iov_array, 0, now);
#if TLS_HOOKS
    else if (c->tls)
        tls_read_outside_call(sk, c);  /* its first bytes were a TLS handshake's (outside any library call) */
#endif
    return 0;
}

#if RECV_HOOK_BTF
/* The read side on the sock_recv_length BTF tracepoint (loaded by user space as tp_btf, like the send
 * side): TP_PROTO(struct sock *sk, int ret, int flags). */
int recv_sock_recv_length(u64 *ctx)
{
    u64 sk = address_of(ctx[0]);
    return socket_read(ctx, sk, (int)ctx[1], ctx[2]);
}
#else
RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    /* TP_PROTO(struct sock *sk, int ret, int flags) */
    return socket_read(ctx, ctx->args[0], (int)ctx->args[1], ctx->args[2]);
}
#endif

#if SEND_HOOK_BTF && RECV_HOOK_BTF
/* The BTF send hook sees a write before TCP takes its bytes, and a non-blocking write may take only some:
 * the application writes the rest again, bytes the walk saw already. TCP's write_seq before each write
 * tells how many of its first bytes were walked (h2_pass, passed over by h2_bytes). */
static __always_inline void h2_write_seq(struct conn_state *c, u64 sk, u64 count)
{
    void *tp = rdonly_cast(sk, TCP_SOCK_BTF_ID);
    u32 seq = *(u32 *)(tp + TCP_WRITE_SEQ_OFF);
    s32 dup = c->h2_seq_known ? (s32)(c->h2_walked_seq - seq) : 0;
    c->h2_pass[H2_FROM_SERVER] = dup > 0 ? dup : 0;
    c->h2_walked_seq = seq + (u32)count;
    c->h2_seq_known = 1;
}
#endif

#if SEND_HOOK_BTF
/* The send side on the tcp_sendmsg_locked BTF tracepoint (loaded by user space as tp_btf; BCC cannot):
 * TP_PROTO(const struct sock *sk, const struct msghdr *msg, const struct sk_buff *skb, int size_goal),
 * typed pointers whose fields are loaded directly. The write's buffer comes from msg's iterator, with no
 * register look-up and no user-memory read of the iovec (on this benchmark's CPU that is 2 helper calls
 * per response write instead of 5). The tracepoint fires in each turn of tcp_sendmsg_locked's copy loop,
 * before the bytes are copied, so:
 *  - only a write's first turn counts (the iterator has not advanced: iov_offset 0; a vectored write
 *    whose earlier turns ended exactly at an iovec's end looks like a new write, whose bytes were not
 *    seen before: one more write of the response, nothing counted twice);
 *  - a turn that will wait for send-buffer space (no room in the queue's last skb and the socket's
 *    queue at its limit, as sk_stream_memory_free() tells) is skipped: it either fails with EAGAIN and
 *    is written again later, or fires again when space came, both seen then;
 *  - the write's length is what it asks to send (a partial write's rest comes as a write of its own).
 * Offsets are -D parameters from the running kernel's BTF (ebpftool/tracers/inference.py). */
int send_tcp_sendmsg(u64 *ctx)
{
    u64 sk = address_of(ctx[0]);
    struct conn_state *c = sock_conn(sk);
    if (!c)
        return 0;
    void *msg = (void *)ctx[1];
    if (*(u64 *)(msg + MSG_ITER_OFFSET_OFF) != 0)
        return 0;  /* a later turn of the copy loop */
    void *skb = (void *)ctx[2];
    int room = skb ? (int)ctx[3] - (int)*(u32 *)(skb + SKB_LEN_OFF) : 0;
    void *sock = (void *)ctx[0];
    int queued = *(int *)(sock + SK_WMEM_QUEUED_OFF), limit = *(int *)(sock + SK_SNDBUF_OFF);
    if (room <= 0 && queued >= limit)
        return 0;  /* this turn waits for space: seen when the write goes, or again when it is retried */
    u64 ptr = 0, iov_array = 0, count;
    u32 len;
    int whole = 1;
#if TLS_HOOKS
    /* ciphertext: the library call's plaintext instead (one call of written_buffer below for both: each
     * inlined call is thousands of instructions to compile and verify) */
    if (c->tls) {
        if (!tls_write_plaintext(sk, c, &ptr, &count))
            return 0;
        len = count;
    } else
#endif
    {
        u8 type = *(u8 *)(msg + MSG_ITER_TYPE_OFF);
        count = *(u64 *)(msg + MSG_ITER_COUNT_OFF);
        u64 p = *(u64 *)(msg + MSG_ITER_UBUF_OFF);  /* ITER_UBUF: the buffer; ITER_IOVEC: the kernel's iovec array */
        len = count;
        if (type == ITER_UBUF_TYPE) {
            ptr = p;
        } else if (type == ITER_IOVEC_TYPE) {
            /* a typed pointer to the kernel's copy of the iovec array: loaded directly */
            ptr = *(u64 *)p;
            u64 first_len = *(u64 *)(p + 8);
            len = first_len < count ? first_len : count;
            iov_array = p;
        }
#if RECV_HOOK_BTF
        if (c->proto == PROTO_H2)
            h2_write_seq(c, sk, count);
#endif
        /* A write the send buffer has room for goes out whole; a larger one may go out in part, its rest
         * written again (and seen again): its length is then no count of the response's bytes. */
        whole = (s64)count <= (s64)limit - queued;
    }
    u64 now = bpf_ktime_get_ns();  /* the write's bytes are being queued: start and end are one time */
    return written_buffer(ctx, &sk, c, ptr, len, count, whole, iov_array, 1, now, now, 0);
}
#else
RAW_TRACEPOINT_PROBE(sock_send_length)
{
    int ret = (int)ctx->args[1];
    if (ret <= 0)
        return 0;
    u64 sk = ctx->args[0];
    struct conn_state *c = sock_conn(sk);
    if (!c)
        return 0;
    u64 now = bpf_ktime_get_ns();  /* the hook runs once the bytes went out: start and end are one time */
    u32 how;
    u64 arg;
#if TLS_HOOKS
    if (c->tls) {
        /* ciphertext: the library call's plaintext instead (one call of written() below for both) */
        u64 plain = 0;
        if (!tls_write_plaintext(sk, c, &arg, &plain))
            return 0;
        how = BUF_PLAIN;
        ret = plain;
    } else
#endif
    arg = syscall_buffer(&how);
    return written(ctx, &sk, c, how, arg, ret, now, now);
}
#endif

/* Follows socket sk from now (one that is followed already starts afresh);
 * 0 when its slots are all taken. */
static __always_inline int watch_connection(u64 sk, u16 port, u16 client_port, u16 family, const u8 *v4,
                                            const u8 *v6, u8 seeded)
{
    u32 index = 0;
    struct conn_state *slot = find_conn_in(sk, &index);
    if (!slot)
        slot = claim_conn(sk, &index);
    if (!slot)
        return 0;
    struct conn_state c = {};
    c.key = sk;
    c.slot = index;
    c.id = ((u64)bpf_get_prandom_u32() << 32) ^ bpf_ktime_get_ns();
    c.port = port;
    c.client_port = client_port;
    c.family = family;
    c.seeded = seeded;
    if (family == FAMILY_INET)
        __builtin_memcpy(c.client_addr, v4, 4);
    else
        __builtin_memcpy(c.client_addr, v6, 16);
    *slot = c;
    arrival_watch(index, sk);
    last_writes.delete(&sk);
    return 1;
}

/* Connections of watched ports that found no slot, per port. */
BPF_PERCPU_HASH(untracked, u16, u64, 1024);

/* A server-side connection on a watched port is established: watched from now.
 * The server's close (or a reset) ends it. */
TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == TCP_ESTABLISHED) {
        if (args->oldstate != TCP_SYN_RECV)
            return 0;  /* an outgoing connection */
        u16 port = args->sport;
        if (!watched_ports.lookup(&port))
            return 0;
#if !FILTER_PIDS
        count_accepted(port);  /* at its handshake: also a connection that never sends a byte */
#endif
        if (!watch_connection(sk, port, args->dport, args->family, args->daddr, args->daddr_v6, 0)) {
            u64 zero64 = 0;
            u64 *n = untracked.lookup_or_try_init(&port, &zero64);
            if (n)
                *n += 1;
        }
        return 0;
    }
    if (args->newstate != TCP_FIN_WAIT1 && args->newstate != TCP_LAST_ACK && args->newstate != TCP_CLOSE)
        return 0;
    if (!maybe_watched(sk))
        return 0;  /* every TCP socket of the node closes through here */
    struct conn_state *c = find_conn(sk);
    if (!c)
        return 0;
    connection_closed(&sk, c);
    return 0;
}

#if SEED_CONNECTIONS
/* Connections established before the tracer: found at their next read (this
 * fires inside it, before sock_recv_length). Attached only while user space
 * knows of such connections: it runs at every TCP read of the system. */
TRACEPOINT_PROBE(tcp, tcp_rcv_space_adjust)
{
    u16 port = args->sport;
    if (!watched_ports.lookup(&port))
        return 0;
    u64 sk = (u64)args->skaddr;
    if (maybe_watched(sk) && find_conn(sk))
        return 0;
#if FILTER_PIDS
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!watched_pids.lookup(&pid))
        return 0;
#endif
    /* A connection that finds no slot is tried again at its next read: not counted here, where it would be
     * counted once per read (user space reports those never found). */
    if (watch_connection(sk, port, args->dport, args->family, args->daddr, args->daddr_v6, 1))
        stat_add(STAT_INF_SEEDED, 1);
    return 0;
}
#endif

#if ARRIVAL_HOOK
/* Bytes arrived on a socket (sock:sk_data_ready, Linux 6.7+; TCP signals it as it queues them). On a
 * watched connection with no request open, or whose response has begun, they are the next request's
 * first: it began now, though the server may read it much later (it waits in the socket's queue). */
static __always_inline int bytes_arrived(u64 sk)
{
    if (!maybe_watched(sk))
        return 0;
    /* conn_state is not touched here: its line in conn_arrivals (conn_table.bpf.h) says all */
    struct conn_arrival *a = find_arrival(sk);
    if (!a)
        return 0;
    int first = a->first == 0 && !a->open;
    int last = a->want_last;  /* (conn_state.arrival_last) */
    if (!first && !last)
        return 0;
    u64 t = read_time(sk);  /* TCP's clock of the socket: refreshed as it took the segment in */
    if (first) {
        /* While the latest arrival is noted (HTTP/2), the bytes the socket holds now: the next read's frames
         * that begin within them came now, those after later (by the latest). Written before `first`, which
         * arrival_take() reads first. */
        *(volatile u32 *)&a->first_queued = last ? queued_bytes(sk) : 0;
        *(volatile u64 *)&a->first = t;
    }
    if (last)
        a->last = t;
    return 0;
}

#if RECV_HOOK_BTF
/* On the BTF tracepoint (loaded by user space as tp_btf): TP_PROTO(const struct sock *sk). */
int arrival_sk_data_ready(u64 *ctx)
{
    return bytes_arrived(address_of(ctx[0]));
}
#else
RAW_TRACEPOINT_PROBE(sk_data_ready)
{
    return bytes_arrived(ctx->args[0]);
}
#endif
#endif

/* The way in through the syscalls (any kernel with tracepoints): accept, read and write enter/exit,
 * a connection keyed by (pid, fd). Where the kernel's BTF gives the file table's and the socket's layout
 * (SYSCALL_SOCKETS), the socket behind a connection's fd is found too: its client address when accept()
 * was given none (uvloop), and with sock:sk_data_ready (ARRIVAL_HOOK) when a request's first byte
 * arrived, before the server read it. */

struct io_args {
    u64 ptr;
    u64 ts;       /* syscall entry */
    s32 fd;
    u16 how;
    u8 is_write;
    u8 active;    /* a read or write on a watched fd is in flight on this thread */
};

struct accept_args {
    u64 sockaddr;
    u32 lfd;
    u16 port;
    u16 pad;
};

BPF_HASH(listeners, struct conn_key, u16, 4096);          /* watched listening fds -> port */
BPF_HASH(accepting, u32, struct accept_args, 4096);       /* per thread, accept() in flight */
/* Per thread: the read or write on a watched fd in flight. Task storage, not a
 * hash keyed by thread id: the exit of every syscall in the system looks here,
 * and a task-storage miss costs a fraction of a hash lookup. */
BPF_TASK_STORAGE(inflight, struct io_args);
#if SYSCALL_SOCKETS && ARRIVAL_HOOK
RAW_TRACEPOINT_PROBE(sk_data_ready)
{
    u64 sk = ctx->args[0];
    u32 ports = socket_ports(sk);
    u32 local = ports >> 16, word = local / 64;
    u64 *served = arrival_ports.lookup(&word);
    if (!served || !((*served >> (local % 64)) & 1) || (ports & 0xffff) == 0)
        return 0;  /* not a served port, or a listening socket (no remote port) */
    u64 now = bpf_ktime_get_ns();
    u64 *k = sock_conns.lookup(&sk);
    struct conn_state *c = k ? conns.lookup(k) : 0;
    if (!c) {
        /* not accepted yet, or accepted and its state not stored yet (accept_exit ties the socket first):
         * the connection takes it when it is */
        struct early_arrival *noted = early_arrivals.lookup(&sk);
        if (noted && noted->ports == ports)
            return 0;  /* the first arrival stays */
        /* none, or one left by an earlier socket at this address that no accept took (another process's,
         * or one that closed first): it would keep this socket's from being noted */
        struct early_arrival early = {.ts = now, .ports = ports};
        early_arrivals.update(&sk, &early);
        return 0;
    }
    /* As with the socket hooks: bytes arriving while no request is open, or after its answer began,
     * are the next request's first. */
    int last = c->seq == 0 || c->proto == PROTO_H2;
    if (c->arrival == 0 && (c->req_start == 0 || c->resp_start != 0)) {
        /* the bytes the socket holds now, before `arrival` (as arrival_take() of the socket hooks reads them) */
        if (last)
            *(volatile u32 *)&c->arrival_first_queued = probe_queued_bytes(sk);
        *(volatile u64 *)&c->arrival = now;
    }
    if (last)
        c->arrival_last = now;  /* (conn_state.arrival_last) */
    return 0;
}
#endif

static __always_inline int accept_enter(s32 lfd, u64 sockaddr)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
#if FILTER_PIDS
    if (!watched_pids.lookup(&pid))
        return 0;
#endif
    struct conn_key lk = {.pid = pid, .fd = lfd};
    u16 *port = listeners.lookup(&lk);
#if FILTER_PORTS
    if (!port)
        return 0;
#endif
    struct accept_args a = {.sockaddr = sockaddr, .lfd = lfd, .port = port ? *port : 0};
    u32 tid = id;
    accepting.update(&tid, &a);
    return 0;
}

static __always_inline int accept_exit(long ret)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    struct accept_args *a = accepting.lookup(&tid);
    if (!a)
        return 0;
    struct accept_args args = *a;
    accepting.delete(&tid);
    if (ret < 0)
        return 0;
    u64 k = current_key((s32)ret);
    struct conn_state c = {};
    c.key = k;
    c.id = ((u64)bpf_get_prandom_u32() << 32) ^ bpf_ktime_get_ns();  /* (pid, fd) is reused by later connections */
    c.pid = k >> 32;
    c.cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(c.comm, sizeof(c.comm));
    c.port = args.port;
#if SYSCALL_SOCKETS
    u64 sk = fd_socket((s32)ret);
    if (sk)
        peer_of_socket(&c, sk);
    else if (args.sockaddr) {
#else
    if (args.sockaddr) {
#endif
        u16 family = 0;
        read_user(&family, sizeof(family), (void *)args.sockaddr);
        u16 port_be = 0;
        read_user(&port_be, sizeof(port_be), (void *)(args.sockaddr + 2));
        c.client_port = (port_be >> 8) | ((port_be & 0xff) << 8);
        if (family == FAMILY_INET) {
            c.family = 2;
            read_user(c.client_addr, 4, (void *)(args.sockaddr + 4));
        } else if (family == FAMILY_INET6) {
            c.family = 10;
            read_user(c.client_addr, 16, (void *)(args.sockaddr + 8));
        }
    }
#if SYSCALL_SOCKETS && ARRIVAL_HOOK
    if (sk)
        follow_socket(sk, k, &c);  /* on the new state, before it is stored */
#endif
    conns.update(&k, &c);
#if SYSCALL_SOCKETS && ARRIVAL_HOOK
    if (sk) {
        /* bytes that arrived between tying the socket and storing the state found no state: noted as an
         * early arrival, taken now */
        struct conn_state *stored = conns.lookup(&k);
        if (stored)
            take_early_arrival(sk, stored);
    }
#endif
    last_writes.delete(&k);
    count_accepted(c.port);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { return accept_enter(args->fd, (u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return accept_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_accept) { return accept_enter(args->fd, (u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return accept_exit(args->ret); }

/* ---- reads and writes --------------------------------------------------------- */

/* Entry: one lookup for an unwatched fd, then nothing. */
static __always_inline int io_enter(int is_write, s32 fd, u64 ptr, u32 how)
{
    u64 k = current_key(fd);
    struct conn_state *c = conns.lookup(&k);
    if (!c)
        return 0;
    /* The server reads again after it began answering: the answer is complete
     * (an idle keep-alive connection must not hold its last request back). */
    u64 now = bpf_ktime_get_ns();
#if SYSCALL_SOCKETS && ARRIVAL_HOOK
    if (!c->sock_known) {  /* open before the tracer (seeded from /proc): its socket, once */
        u64 sk = fd_socket(fd);
        if (sk)
            follow_socket(sk, k, c);
        else
            c->sock_known = 2;  /* not found: not looked for again */
    } else if (!is_write && c->seq == 0 && c->req_start == 0 && c->arrival == 0 && c->sock_known == 1 && !c->tls
               && c->proto != PROTO_H2) {
        /* The connection's first request is read and no arrival was noted: an sk_data_ready that found the
         * socket tied but the state not stored yet may have written its early arrival after accept_exit's
         * second look. Taken now (once: take_early_arrival deletes what it finds). */
        u64 sk = fd_socket(fd);
        if (sk)
            take_early_arrival(sk, c);
    }
#endif
    if (!is_write && c->resp_start != 0)
        finish_request(&k, c, now);
    struct io_args *a = inflight.task_storage_get(bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!a)
        return 0;
    a->ptr = ptr;
    a->ts = now;
    a->fd = fd;
    a->how = how;
    a->is_write = is_write;
    a->active = 1;
    return 0;
}

/* At a syscall's exit: the watched connection its entry recorded, or NULL.
 * Clears the in-flight record either way, and skips failed calls. */
static __always_inline struct conn_state *finished_io(int is_write, long ret, struct io_args *a, u64 *k)
{
    struct io_args *ap = inflight.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!ap || !ap->active || ap->is_write != is_write)
        return 0;
    *a = *ap;
    ap->active = 0;
    if (ret <= 0)
        return 0;
    *k = current_key(a->fd);
    struct conn_state *c = conns.lookup(k);
    if (c && c->cgroup == 0)
        c->cgroup = bpf_get_current_cgroup_id();  /* seeded from /proc: its process's cgroup, seen from here */
    return c;
}

static __always_inline int read_exit(void *ctx, long ret)
{
    struct io_args a;
    u64 k;
    struct conn_state *c = finished_io(0, ret, &a, &k);
    if (!c)
        return 0;
    u32 len = 0;
    u64 iov_array;
    u64 ptr = first_buffer(a.how, a.ptr, ret, &len, &iov_array);
#if TLS_HOOKS
    if (c->tls) {
        /* ciphertext: the plaintext comes at the library call's return (as with the socket hooks) */
        if (tls_read_outside_call(k, c)) {
            if (c->arrival != 0 && ptr && tls_handshake_only(ptr, len))
                c->arrival = 0;  /* the handshake's bytes arrived: not a request's */
            tls_note_data(c, ptr);
        }
        return 0;
    }
#endif
    if (!ptr || len == 0)
        return 0;
    u64 now = bpf_ktime_get_ns();
    int next = on_read(&k, c, ptr, len, now);
    if (next == READ_LET_GO)
        forget_conn(&k);
    else if (next == READ_H2)
        h2_bytes(ctx, H2_VIA_READ, &k, c, H2_FROM_CLIENT, ptr, len, ret, iov_array, 0, now);
#if TLS_HOOKS
    else if (c->tls)
        tls_read_outside_call(k, c);  /* its first bytes were a TLS handshake's (outside any library call) */
#endif
    return 0;
}

static __always_inline int write_exit(void *ctx, long ret)
{
    struct io_args a;
    u64 k;
    struct conn_state *c = finished_io(1, ret, &a, &k);
    if (!c)
        return 0;
    u64 now = bpf_ktime_get_ns();
#if TLS_HOOKS
    if (c->tls) {
        /* ciphertext: the library call's plaintext instead (one call of written() below for both) */
        u64 plain = 0;
        if (!tls_write_plaintext(k, c, &a.ptr, &plain))
            return 0;
        a.how = BUF_PLAIN;
        a.ts = now;
        ret = plain;
    }
#endif
    return written(ctx, &k, c, a.how, a.ptr, ret, a.ts, now);
}

TRACEPOINT_PROBE(syscalls, sys_enter_read) { return io_enter(0, args->fd, (u64)args->buf, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return read_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    return (args->flags & RECV_NOT_FROM_STREAM) ? 0 : io_enter(0, args->fd, (u64)args->ubuf, BUF_PLAIN);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return read_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return io_enter(0, args->fd, (u64)args->vec, BUF_IOV); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return read_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return (args->flags & RECV_NOT_FROM_STREAM) ? 0 : io_enter(0, args->fd, (u64)args->msg, BUF_MSG);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return read_exit(args, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_write) { return io_enter(1, args->fd, (u64)args->buf, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return write_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { return io_enter(1, args->fd, (u64)args->buff, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return write_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return io_enter(1, args->fd, (u64)args->vec, BUF_IOV); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return write_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return io_enter(1, args->fd, (u64)args->msg, BUF_MSG); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return write_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendfile64) { return io_enter(1, args->out_fd, 0, BUF_NONE); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendfile64) { return write_exit(args, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 k = current_key(args->fd);
    struct conn_state *c = conns.lookup(&k);
    if (!c)
        return 0;
    connection_closed(&k, c);
    return 0;
}

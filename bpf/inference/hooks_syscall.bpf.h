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

BPF_TABLE("lru_hash", u64, struct conn_state, conns, MAX_CONNS);
BPF_HASH(listeners, struct conn_key, u16, 4096);          /* watched listening fds -> port */
BPF_HASH(accepting, u32, struct accept_args, 4096);       /* per thread, accept() in flight */
/* Per thread: the read or write on a watched fd in flight. Task storage, not a
 * hash keyed by thread id: the exit of every syscall in the system looks here,
 * and a task-storage miss costs a fraction of a hash lookup. */
BPF_TASK_STORAGE(inflight, struct io_args);
/* Syscall hooks: a connection is a file descriptor of a process. */
static __always_inline u64 current_key(s32 fd)
{
    return (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | (u32)fd;
}

static __always_inline struct conn_state *find_conn(u64 k)
{
    return conns.lookup(&k);
}

#if SYSCALL_SOCKETS
/* The struct sock behind file descriptor fd of the current process, or 0: current->files->fdt->fd[fd]
 * ->private_data (a struct socket) ->sk, at offsets from the kernel's BTF. Only called for fds known to
 * be sockets (accepted, or followed as connections). */
static __always_inline u64 fd_socket(s32 fd)
{
    u64 task = bpf_get_current_task();
    u64 files = 0, fdt = 0, fds = 0, file = 0, sock = 0, sk = 0;
    u32 max_fds = 0;
    if (fd < 0)
        return 0;
    bpf_probe_read_kernel(&files, sizeof(files), (void *)(task + TASK_FILES_OFF));
    if (!files)
        return 0;
    bpf_probe_read_kernel(&fdt, sizeof(fdt), (void *)(files + FILES_FDT_OFF));
    if (!fdt)
        return 0;
    bpf_probe_read_kernel(&max_fds, sizeof(max_fds), (void *)(fdt + FDT_MAX_FDS_OFF));
    if ((u32)fd >= max_fds)
        return 0;
    bpf_probe_read_kernel(&fds, sizeof(fds), (void *)(fdt + FDT_FD_OFF));
    bpf_probe_read_kernel(&file, sizeof(file), (void *)(fds + (u64)(u32)fd * sizeof(u64)));
    if (!file)
        return 0;
    bpf_probe_read_kernel(&sock, sizeof(sock), (void *)(file + FILE_PRIVATE_DATA_OFF));
    if (!sock)
        return 0;
    bpf_probe_read_kernel(&sk, sizeof(sk), (void *)(sock + SOCKET_SK_OFF));
    return sk;
}

/* The client's address and port, from the socket (accept() may be given no address to fill). */
static __always_inline void peer_of_socket(struct conn_state *c, u64 sk)
{
    u16 family = 0, port_be = 0;
    bpf_probe_read_kernel(&family, sizeof(family), (void *)(sk + SK_FAMILY_OFFSET));
    bpf_probe_read_kernel(&port_be, sizeof(port_be), (void *)(sk + SK_DPORT_OFFSET));
    c->client_port = (port_be >> 8) | ((port_be & 0xff) << 8);
    if (family == FAMILY_INET) {
        c->family = 2;
        bpf_probe_read_kernel(c->client_addr, 4, (void *)(sk + SK_DADDR_OFFSET));
    } else if (family == FAMILY_INET6) {
        c->family = 10;
        bpf_probe_read_kernel(c->client_addr, 16, (void *)(sk + SK_V6_DADDR_OFFSET));
    }
}
#endif

#if SYSCALL_SOCKETS && ARRIVAL_HOOK
/* sk_data_ready names a socket, the connections table a (pid, fd): the sockets of followed connections,
 * written where the fd is first known (accept, a seeded connection's first read), deleted at close. */
BPF_TABLE("lru_hash", u64, u64, sock_conns, MAX_CONNS);
/* A client may send its request before the server accepts the connection: the first arrival on a
 * socket of a served port not followed yet, taken at its accept. ports (skc_portpair) tells a later
 * socket at the same address from the one that left an entry never taken (accepted by another process). */
struct early_arrival {
    u64 ts;
    u32 ports;
    u32 pad;
};
BPF_TABLE("lru_hash", u64, struct early_arrival, early_arrivals, 4096);
/* The local ports served by the watched listeners, a bit each (user space sets them with the listeners):
 * the arrivals on every other socket of the node leave after one read of the socket and an array lookup. */
BPF_ARRAY(arrival_ports, u64, 65536 / 64);

static __always_inline u32 socket_ports(u64 sk)
{
    u32 ports = 0;  /* skc_portpair: the remote port (network order), then the local port */
    bpf_probe_read_kernel(&ports, sizeof(ports), (void *)(sk + SK_DPORT_OFFSET));
    return ports;
}

static __always_inline void follow_socket(u64 sk, u64 k, struct conn_state *c, u64 now)
{
    sock_conns.update(&sk, &k);
    c->sock_known = 1;
    struct early_arrival *early = early_arrivals.lookup(&sk);
    if (!early)
        return;
    if (early->ports == socket_ports(sk) && early->ts <= now && c->arrival == 0)
        c->arrival = early->ts;
    early_arrivals.delete(&sk);
}

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
    if (!k) {
        struct early_arrival early = {.ts = now, .ports = ports};
        early_arrivals.insert(&sk, &early);  /* the first arrival stays */
        return 0;
    }
    struct conn_state *c = conns.lookup(k);
    /* As with the socket hooks: bytes arriving while no request is open, or after its answer began,
     * are the next request's first. */
    if (c && c->arrival == 0 && (c->req_start == 0 || c->resp_start != 0))
        c->arrival = now;
    return 0;
}
#endif

static __always_inline void forget_conn(u64 *k)
{
#if SYSCALL_SOCKETS && ARRIVAL_HOOK
    struct conn_state *c = conns.lookup(k);
    if (c && c->sock_known) {
        u64 sk = fd_socket((s32)*k);  /* still open: at close's entry, or a connection let go */
        u64 *mapped = sk ? sock_conns.lookup(&sk) : 0;
        if (mapped && *mapped == *k)
            sock_conns.delete(&sk);
    }
#endif
    conns.delete(k);
    last_writes.delete(k);
}

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
        bpf_probe_read_user(&family, sizeof(family), (void *)args.sockaddr);
        u16 port_be = 0;
        bpf_probe_read_user(&port_be, sizeof(port_be), (void *)(args.sockaddr + 2));
        c.client_port = (port_be >> 8) | ((port_be & 0xff) << 8);
        if (family == FAMILY_INET) {
            c.family = 2;
            bpf_probe_read_user(c.client_addr, 4, (void *)(args.sockaddr + 4));
        } else if (family == FAMILY_INET6) {
            c.family = 10;
            bpf_probe_read_user(c.client_addr, 16, (void *)(args.sockaddr + 8));
        }
    }
#if SYSCALL_SOCKETS && ARRIVAL_HOOK
    if (sk)
        follow_socket(sk, k, &c, bpf_ktime_get_ns());  /* on the new state, before it is stored */
#endif
    conns.update(&k, &c);
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
            follow_socket(sk, k, c, now);
        else
            c->sock_known = 2;  /* not found: not looked for again */
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

static __always_inline int read_exit(long ret)
{
    struct io_args a;
    u64 k;
    struct conn_state *c = finished_io(0, ret, &a, &k);
    if (!c)
        return 0;
    u32 len = 0;
    u64 iov_array;
    u64 ptr = first_buffer(a.how, a.ptr, ret, &len, &iov_array);
    if (!ptr || len == 0)
        return 0;
    if (on_read(&k, c, ptr, len, bpf_ktime_get_ns()) == READ_LET_GO)
        forget_conn(&k);
    return 0;
}

static __always_inline int write_exit(void *ctx, long ret)
{
    struct io_args a;
    u64 k;
    struct conn_state *c = finished_io(1, ret, &a, &k);
    if (!c)
        return 0;
    return written(ctx, &k, c, a.how, a.ptr, ret, a.ts, bpf_ktime_get_ns());
}

TRACEPOINT_PROBE(syscalls, sys_enter_read) { return io_enter(0, args->fd, (u64)args->buf, BUF_PLAIN); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return read_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    return (args->flags & RECV_NOT_FROM_STREAM) ? 0 : io_enter(0, args->fd, (u64)args->ubuf, BUF_PLAIN);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return read_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return io_enter(0, args->fd, (u64)args->vec, BUF_IOV); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return read_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return (args->flags & RECV_NOT_FROM_STREAM) ? 0 : io_enter(0, args->fd, (u64)args->msg, BUF_MSG);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return read_exit(args->ret); }

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
    finish_request(&k, c, bpf_ktime_get_ns());
    forget_conn(&k);
    return 0;
}

/* Syscall hooks: the connection table, keyed by (pid, fd); where the kernel's BTF gives the file table's
 * and the socket's layout (SYSCALL_SOCKETS), the socket behind a connection's fd and, with the arrival
 * hook, the sockets of followed connections. */

BPF_TABLE("lru_hash", u64, struct conn_state, conns, MAX_CONNS);
/* The arrival hook of these hooks reads and writes conn_state itself (hooks_syscall.bpf.h): nothing to sync. */
static __always_inline void arrival_sync(struct conn_state *c) {}
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

/* The first arrival on socket sk noted before its connection's state could be found, taken by that state.
 * Its time is not compared with the taker's: the hook reads its clock before it writes, so a time read by
 * accept's exit before it looked may be earlier than an arrival it finds (that check lost the arrival). */
static __always_inline void take_early_arrival(u64 sk, struct conn_state *c)
{
    struct early_arrival *early = early_arrivals.lookup(&sk);
    if (!early)
        return;
    if (early->ports == socket_ports(sk) && c->arrival == 0) {
        c->arrival = early->ts;
        if (c->arrival_last == 0)
            c->arrival_last = early->ts;  /* (the first arrival before the accept: the only one kept) */
    }
    early_arrivals.delete(&sk);
}

static __always_inline void follow_socket(u64 sk, u64 k, struct conn_state *c)
{
    sock_conns.update(&sk, &k);
    c->sock_known = 1;
    take_early_arrival(sk, c);
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

/* The connection of a key, for the TLS way in (hooks_tls.bpf.h). */
static __always_inline struct conn_state *tls_conn(u64 key)
{
    return conns.lookup(&key);
}

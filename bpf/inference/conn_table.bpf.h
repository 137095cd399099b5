/* Socket hooks: the connection table, indexed by a hash of the socket's address, and the counting
 * filter in front of it that lets every unwatched socket leave after one inlined array lookup. */

/* Socket hooks: a table indexed by a hash of the socket's address (open
 * addressing, CONN_PROBES slots from the home slot), not a hash map: every
 * read and write of a watched socket finds its state with inlined array
 * lookups instead of a hash-map call (~37 ns, and each request makes four).
 * conn_used has a bit per occupied slot, for user space's idle scan. */
BPF_ARRAY(conns, struct conn_state, MAX_CONNS);
BPF_ARRAY(conn_used, u64, MAX_CONNS / 64);
BPF_HASH(watched_ports, u16, u8, 4096);                    /* local ports whose connections are watched */
/* A counting filter in front of conns: every socket operation of the system
 * asks whether its socket is watched, and nearly all are not. An array slot
 * (one inlined lookup, in a 64 KiB array that stays in cache) answers most of
 * them; only a slot that counts some watched socket costs the table's probes.
 * A slot counts the connections in the table whose address hashes there, so
 * it is never 0 while one of its sockets is watched. */
#define CONN_FILTER_BITS 14
BPF_ARRAY(conn_filter, u32, 1 << CONN_FILTER_BITS);

/* A socket's address, hashed: its top bits index the filter and the connection table. */
#define SOCKET_HASH(sk, bits) FIBONACCI_HASH(sk, bits)

static __always_inline u32 conn_filter_slot(u64 sk)
{
    return SOCKET_HASH(sk, CONN_FILTER_BITS);
}

static __always_inline void conn_filter_add(u64 sk, s32 n)
{
    u32 slot = conn_filter_slot(sk);
    u32 *count = conn_filter.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, n);
}

/* 0: sk is certainly not watched (its slot counts no watched socket). */
static __always_inline int maybe_watched(u64 sk)
{
    u32 slot = conn_filter_slot(sk);
    u32 *count = conn_filter.lookup(&slot);
    return count && *count != 0;
}

/* The connection table: a socket's state lies in one of the CONN_PROBES slots
 * from its home slot (a hash of its address), its key field holding the
 * socket's address; 0 marks a free slot. The TCP state hook and the seeding
 * hook insert, claiming a free slot by compare-and-swap; a connection is let go
 * at close, at an upgrade, or at its first read by an unwatched process, by
 * whichever CPU swaps its key from the socket's address to CONN_CLAIMED first,
 * so only one of them frees the slot and counts it out. With 8 probes a table
 * kept below a quarter full loses no connection (a simulation of random
 * arrivals and departures: ~2% at half full, ~17% at three quarters). */
#define CONN_PROBES 8

static __always_inline u32 conn_home(u64 sk)
{
    return SOCKET_HASH(sk, CONN_TABLE_BITS);
}

/* sk's state, or NULL; *slot_out: its slot. */
static __always_inline struct conn_state *find_conn_in(u64 sk, u32 *slot_out)
{
    u32 home = conn_home(sk);
#pragma unroll
    for (u32 i = 0; i < CONN_PROBES; i++) {
        u32 slot = (home + i) & (MAX_CONNS - 1);
        struct conn_state *c = conns.lookup(&slot);
        if (c && c->key == sk) {
            *slot_out = slot;
            return c;
        }
    }
    return 0;
}

static __always_inline struct conn_state *find_conn(u64 sk)
{
    u32 slot;
    return find_conn_in(sk, &slot);
}

static __always_inline void mark_slot(u32 slot, int used)
{
    u32 word = slot / 64;
    u64 *bits = conn_used.lookup(&word);
    if (!bits)
        return;
    if (used)
        __sync_fetch_and_or(bits, 1ULL << (slot % 64));
    else
        __sync_fetch_and_and(bits, ~(1ULL << (slot % 64)));
}

/* A free slot for sk, claimed (key CONN_CLAIMED) and counted; NULL when all
 * of sk's slots are taken. */
static __always_inline struct conn_state *claim_conn(u64 sk)
{
    u32 home = conn_home(sk);
#pragma unroll
    for (u32 i = 0; i < CONN_PROBES; i++) {
        u32 slot = (home + i) & (MAX_CONNS - 1);
        struct conn_state *c = conns.lookup(&slot);
        if (c && c->key == 0 && __sync_val_compare_and_swap(&c->key, 0, CONN_CLAIMED) == 0) {
            mark_slot(slot, 1);
            conn_filter_add(sk, 1);
            return c;
        }
    }
    return 0;
}

static __always_inline void forget_connection(u64 sk)
{
    u32 slot = 0;
    struct conn_state *c = find_conn_in(sk, &slot);
    if (c && __sync_val_compare_and_swap(&c->key, sk, CONN_CLAIMED) == sk) {
        /* this CPU owns the slot until it stores 0: nobody else counts it out or takes it meanwhile */
        mark_slot(slot, 0);
        conn_filter_add(sk, -1);
        c->key = 0;
    }
    last_writes.delete(&sk);
}

static __always_inline void forget_conn(u64 *k)
{
    forget_connection(*k);
}

/* The watched connection of socket sk, or NULL. Its first read or write says
 * which process serves it (and, with --pid/--comm, whether it is watched). */
static __always_inline struct conn_state *sock_conn(u64 sk)
{
    if (!maybe_watched(sk))
        return 0;
    struct conn_state *c = find_conn(sk);
    if (!c || c->pid != 0)
        return c;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
#if FILTER_PIDS
    if (!watched_pids.lookup(&pid)) {
        forget_connection(sk);
        return 0;
    }
#endif
    c->pid = pid;
    c->cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(c->comm, sizeof(c->comm));
#if FILTER_PIDS
    if (!c->seeded)
        count_accepted(c->port);  /* only now is it known to be a watched process's */
#endif
    return c;
}

/* The connection of a key, for the TLS way in (hooks_tls.bpf.h). */
static __always_inline struct conn_state *tls_conn(u64 key)
{
    return sock_conn(key);
}

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
/* A counting filter in front of conns: every socket operation of the system asks whether its socket is
 * watched, and nearly all are not. A slot counts the connections in the table whose address hashes there,
 * so it is never 0 while one of its sockets is watched. The hooks read a bit per slot instead, set while
 * its count is not 0: 2 KiB that stay in the CPU's nearest cache, where the counts take 128 KiB (a
 * profile found the hooks waiting on that load). Only a slot that counts some watched socket costs the
 * table's probes. */
#define CONN_FILTER_BITS 14
BPF_ARRAY(conn_filter, u32, 1 << CONN_FILTER_BITS);
BPF_ARRAY(filter_bits, u64, (1 << CONN_FILTER_BITS) / 64);

/* A socket's address, hashed: its top bits index the filter and the connection table. */
#define SOCKET_HASH(sk, bits) FIBONACCI_HASH(sk, bits)

static __always_inline u32 conn_filter_slot(u64 sk)
{
    return SOCKET_HASH(sk, CONN_FILTER_BITS);
}

/* n (1 or -1) more connections in sk's slot. The count moves first; an insertion sets the slot's bit, a
 * deletion that leaves the count at 0 clears it and then looks again (a connection counted in meanwhile
 * set the bit before that look, or will after it). */
static __always_inline void conn_filter_add(u64 sk, s32 n)
{
    u32 slot = conn_filter_slot(sk);
    u32 word = slot / 64;
    u32 *count = conn_filter.lookup(&slot);
    u64 *bits = filter_bits.lookup(&word);
    if (!count || !bits)
        return;
    u64 bit = 1ULL << (slot % 64);
    __sync_fetch_and_add(count, n);
    if (n > 0) {
        __sync_fetch_and_or(bits, bit);
    } else if (*(volatile u32 *)count == 0) {
        __sync_fetch_and_and(bits, ~bit);
        if (*(volatile u32 *)count != 0)
            __sync_fetch_and_or(bits, bit);
    }
}

/* 0: sk is certainly not watched (its slot counts no watched socket). */
static __always_inline int maybe_watched(u64 sk)
{
    u32 slot = conn_filter_slot(sk);
    u32 word = slot / 64;
    u64 *bits = filter_bits.lookup(&word);
    return bits && ((*bits >> (slot % 64)) & 1);
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

#if ARRIVAL_HOOK
/* What the arrival hook (sk_data_ready) reads and writes, apart from the connection's state: the hook runs on
 * the CPU that queued the bytes (on loopback, the sender's), the reads and writes on the server's, and a
 * cache line both write bounces between them. With the hook on conn_state's own fields each request moved
 * several of its lines across and back, and the read that followed missed on them. Here one line per
 * connection moves (the hook notes an arrival, the server's next read takes it), and the state's lines stay
 * with the server's CPU. A line per slot: 64 bytes, and the mmapable array's values begin on a page. */
struct conn_arrival {
    u64 key;        /* conns[slot].key's socket (0: none), for the hook's probes */
    u64 first;      /* the first bytes of the next request arrived (0: none since the last read took them) */
    u64 last;       /* the latest bytes arrived (noted while want_last), taken by the next read */
    u32 first_queued; /* conn_state.arrival_first_queued of `first` (noted while want_last, else 0) */
    u8 open;        /* a request began and its answer has not: bytes arriving are its own */
    u8 want_last;   /* the latest arrival is noted: before the connection's first request, and on HTTP/2 */
    u8 pad[34];
};
#define BPF_F_MMAPABLE_FLAG 1024  /* BPF_F_MMAPABLE */
BPF_F_TABLE("array", u32, struct conn_arrival, conn_arrivals, MAX_CONNS, BPF_F_MMAPABLE_FLAG);

static __always_inline struct conn_arrival *arrival_line(struct conn_state *c)
{
    u32 slot = c->slot & (MAX_CONNS - 1);
    return conn_arrivals.lookup(&slot);
}

/* A connection's line, from now on its socket's (slot: its slot in conns). */
static __always_inline void arrival_watch(u32 slot, u64 sk)
{
    struct conn_arrival *a = conn_arrivals.lookup(&slot);
    if (!a)
        return;
    a->first = 0;
    a->last = 0;
    a->first_queued = 0;
    a->open = 0;
    a->want_last = 1;  /* (seq 0) */
    a->key = sk;
}

/* The hook's view of c brought up to date after its state changed (a request began, was answered or ended;
 * the connection became HTTP/2 or TLS): the conditions on conn_state the hook would otherwise read. A request
 * that opens also drops an arrival noted since its read took the last one: bytes of its own. */
static __always_inline void arrival_sync(struct conn_state *c)
{
    struct conn_arrival *a = arrival_line(c);
    if (!a)
        return;
    u8 open = c->req_start != 0 && c->resp_start == 0;
    u8 want_last = c->seq == 0 || c->proto == PROTO_H2;
    if (open && !a->open && a->first != 0)
        a->first = 0;
    if (a->open != open)
        a->open = open;
    if (a->want_last != want_last)
        a->want_last = want_last;
}

/* At a read that moved bytes: what the hook noted since the last one, into c->arrival (kept if it is set:
 * the first arrival counts) and c->arrival_last, where the state machine takes them. */
static __always_inline void arrival_take(struct conn_state *c)
{
    struct conn_arrival *a = arrival_line(c);
    if (!a)
        return;
    u64 first = *(volatile u64 *)&a->first, last = a->last;
    if (last != 0) {
        /* with first's count, read while a->first is set (the hook writes neither then) */
        c->arrival_first_queued = first != 0 && c->arrival == 0 ? *(volatile u32 *)&a->first_queued : 0;
        c->arrival_last = last;
        a->last = 0;
    }
    if (first != 0) {
        if (c->arrival == 0)
            c->arrival = first;
        a->first = 0;
    }
}

/* sk's line, or NULL (the same probes as find_conn_in, on conn_arrivals' keys). */
static __always_inline struct conn_arrival *find_arrival(u64 sk)
{
    u32 home = conn_home(sk);
#pragma unroll
    for (u32 i = 0; i < CONN_PROBES; i++) {
        u32 slot = (home + i) & (MAX_CONNS - 1);
        struct conn_arrival *a = conn_arrivals.lookup(&slot);
        if (a && a->key == sk)
            return a;
    }
    return 0;
}
#else
static __always_inline void arrival_watch(u32 slot, u64 sk) {}
static __always_inline void arrival_sync(struct conn_state *c) {}
static __always_inline void arrival_take(struct conn_state *c) {}
#endif

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

/* A free slot for sk, claimed (key CONN_CLAIMED) and counted, *slot_out its index; NULL when all of sk's
 * slots are taken. */
static __always_inline struct conn_state *claim_conn(u64 sk, u32 *slot_out)
{
    u32 home = conn_home(sk);
#pragma unroll
    for (u32 i = 0; i < CONN_PROBES; i++) {
        u32 slot = (home + i) & (MAX_CONNS - 1);
        struct conn_state *c = conns.lookup(&slot);
        if (c && c->key == 0 && __sync_val_compare_and_swap(&c->key, 0, CONN_CLAIMED) == 0) {
            mark_slot(slot, 1);
            conn_filter_add(sk, 1);
            *slot_out = slot;
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
#if ARRIVAL_HOOK
        struct conn_arrival *a = conn_arrivals.lookup(&slot);
        if (a)
            a->key = 0;
#endif
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

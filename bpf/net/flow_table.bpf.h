/* The open-flow table: a socket's flow lies in one of FLOW_PROBES slots from its home slot (a hash of the
 * socket's address), its `sk` field holding the address; 0 marks a free slot. Not a hash map: every send
 * and receive of the node looks its socket up, and an array lookup is inlined by the verifier where a
 * hash-map lookup is a helper call that hashes the key (docs/net.md has what each costs). A slot is claimed
 * by compare-and-swap of its key from 0 to the socket's address, and emptied by whichever CPU swaps the
 * key from the address to NET_FLOW_CLAIMED first (the fold at destroy, or at a reused address), which
 * clears the flow and only then frees the slot. flow_used has a bit per occupied slot for user space. */
#define FLOW_PROBES 8

static __always_inline u32 flow_home(u64 sk)
{
    return FIBONACCI_HASH(sk, NET_FLOW_TABLE_BITS);
}

/* sk's flow, or NULL; *slot_out: its slot. */
static __always_inline struct flow *find_flow_in(u64 sk, u32 *slot_out)
{
    u32 home = flow_home(sk);
#pragma unroll
    for (u32 i = 0; i < FLOW_PROBES; i++) {
        u32 slot = (home + i) & (NET_MAX_FLOWS - 1);
        struct flow *f = flows.lookup(&slot);
        if (f && f->sk == sk) {
            *slot_out = slot;
            return f;
        }
    }
    return 0;
}

static __always_inline struct flow *find_flow(u64 sk)
{
    u32 slot;
    return find_flow_in(sk, &slot);
}

static __always_inline void mark_flow_slot(u32 slot, int used)
{
    u32 word = slot / 64;
    u64 *bits = flow_used.lookup(&word);
    if (!bits)
        return;
    if (used)
        __sync_fetch_and_or(bits, 1ULL << (slot % 64));
    else
        __sync_fetch_and_and(bits, ~(1ULL << (slot % 64)));
}

/* A slot for sk, claimed (its key set, every other field zero), or the one another CPU claimed for sk
 * meanwhile; NULL when all of sk's slots are taken. */
static __always_inline struct flow *claim_flow(u64 sk)
{
    u32 home = flow_home(sk);
#pragma unroll
    for (u32 i = 0; i < FLOW_PROBES; i++) {
        u32 slot = (home + i) & (NET_MAX_FLOWS - 1);
        struct flow *f = flows.lookup(&slot);
        if (!f)
            continue;
        if (f->sk == 0) {
            u64 was = __sync_val_compare_and_swap(&f->sk, 0, sk);
            if (was == 0) {
                mark_flow_slot(slot, 1);
                return f;
            }
            if (was == sk)
                return f;
        } else if (f->sk == sk) {
            return f;
        }
    }
    return 0;
}

/* Take sk's flow f (found in slot) out of the table: a copy in *out, 1 for the one CPU that took it (0:
 * another CPU took it). The slot is cleared before it is freed, so the next socket's flow starts empty. */
static __always_inline int take_flow(u64 sk, struct flow *f, u32 slot, struct flow *out)
{
    if (__sync_val_compare_and_swap(&f->sk, sk, NET_FLOW_CLAIMED) != sk)
        return 0;
    __builtin_memcpy(out, f, sizeof(*out));
    out->sk = sk;
    __builtin_memset((u8 *)f + sizeof(f->sk), 0, sizeof(*f) - sizeof(f->sk));
    mark_flow_slot(slot, 0);
    /* an atomic store: the compiler keeps the clearing before it, so a CPU that claims the slot next finds
     * it empty */
    __sync_val_compare_and_swap(&f->sk, NET_FLOW_CLAIMED, 0);
    return 1;
}

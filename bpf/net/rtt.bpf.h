/* RTT: a flow's smoothed RTT sampled into its address pair's histogram (rtt_hist), at most once per
 * RTT_SAMPLE_JIFFIES per socket (tcp_probe, in hooks_tcp.bpf.h, fires on every segment received). */

#if NET_HAVE_TCP_PROBE
/* One RTT sample of flow f (smoothed RTT in us), into its address pair's histogram. */
static __always_inline void sample_rtt(struct flow *f, u32 srtt_us)
{
    f->srtt_us = srtt_us;
    struct rtt_key key = {};
    key.family = f->family;
    __builtin_memcpy(key.laddr, f->laddr, NET_ADDR_LEN);
    __builtin_memcpy(key.raddr, f->raddr, NET_ADDR_LEN);
    struct hist_value zero = {};
    struct hist_value *h = rtt_hist.lookup_or_try_init(&key, &zero);
    if (!h) {
        stat_add(NET_STAT_RTT_PEERS_FULL, 1);
        return;
    }
    u64 rtt_ns = (u64)srtt_us * 1000;
    hist_add(h, RTT_BUCKET(rtt_ns), rtt_ns);
}

/* Whether flow f is due an RTT sample (and if so, the next one is not due before RTT_SAMPLE_JIFFIES).
 * This runs for every segment received: kept in jiffies, whose read the verifier inlines
 * (bpf_ktime_get_ns() is a helper call that reads the clock source: its cost in docs/performance.md). */
static __always_inline int rtt_sample_due(struct flow *f)
{
    u64 now = bpf_jiffies64();
    if (now - f->rtt_sampled_jiffies < RTT_SAMPLE_JIFFIES)
        return 0;
    f->rtt_sampled_jiffies = now;
    return 1;
}
#endif

/* Which processes are traced: all, or (FILTER_PIDS, --pid) those in watched_pids, which user space fills
 * with the process and its descendants and the fork hook below extends to children born later. */

static __always_inline int pid_watched(u32 pid)
{
#if FILTER_PIDS
    return watched_pids.lookup(&pid) != NULL;
#else
    return 1;
#endif
}

#if FILTER_PIDS
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 parent = bpf_get_current_pid_tgid() >> 32, child = args->child_pid;  /* parent_pid is the forking thread's id */
    u8 one = 1;
    if (watched_pids.lookup(&parent))
        watched_pids.update(&child, &one);
    return 0;
}
#endif

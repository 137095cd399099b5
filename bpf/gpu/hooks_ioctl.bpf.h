/* ioctls on the NVIDIA device nodes, timed by their syscall tracepoints. An fd is watched from the
 * openat() that returned it (path starts with IOCTL_PREFIX) to its close(); user space adds the fds
 * open before the tracer started from /proc/PID/fd. */

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32, tid = (u32)id;
    if (!pid_watched(pid))
        return 0;
    char path[IOCTL_PATH_MAX] = {};
    if (read_user_str(path, sizeof(path), args->filename) < IOCTL_PREFIX_LEN)
        return 0;
#pragma unroll
    for (int i = 0; i < IOCTL_PREFIX_LEN; i++) {
        if (path[i] != IOCTL_PREFIX[i])
            return 0;
    }
    struct fd_device dev = {};  /* the device's name: what follows the prefix */
#pragma unroll
    for (int i = 0; i < IOCTL_DEVICE_LEN - 1; i++)
        dev.device[i] = path[IOCTL_PREFIX_LEN + i];
    open_pending.update(&tid, &dev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct fd_device *dev = open_pending.lookup(&tid);
    if (!dev)
        return 0;
    if (args->ret >= 0) {
        struct fd_key key = {.pid = id >> 32, .fd = args->ret};
        device_fds.update(&key, dev);
    }
    open_pending.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    struct fd_key key = {.pid = bpf_get_current_pid_tgid() >> 32, .fd = args->fd};
    device_fds.delete(&key);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
    u64 id = bpf_get_current_pid_tgid();
    struct fd_key key = {.pid = id >> 32, .fd = args->fd};
    struct fd_device *dev = device_fds.lookup(&key);
    if (!dev)
        return 0;
    struct ioctl_inflight in = {.start_ns = bpf_ktime_get_ns()};
    in.key.pid = key.pid;
    in.key.request = args->cmd;
    __builtin_memcpy(in.key.device, dev->device, IOCTL_DEVICE_LEN);
    u32 tid = (u32)id;
    ioctl_start.update(&tid, &in);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
    u64 now = bpf_ktime_get_ns();
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct ioctl_inflight *in = ioctl_start.lookup(&tid);
    if (!in)
        return 0;
    struct ioctl_key key = in->key;
    u64 duration = now - in->start_ns;
    ioctl_start.delete(&tid);
    key.err = args->ret < 0 ? (s32)args->ret : 0;
    u32 zero = 0;
    struct hist_value *h = ioctl_hist.lookup(&key);
    if (!h) {
        struct hist_value *init = zero_hist.lookup(&zero);
        if (!init)
            return 0;
        ioctl_hist.update(&key, init);
        h = ioctl_hist.lookup(&key);
        if (!h)
            return 0;
    }
    hist_add(h, GPU_CALL_BUCKET(duration), duration);
    return 0;
}

/* The CUDA program's own count of its ioctls on NVIDIA device nodes, for scripts/gpu-device-check.sh to set
 * beside ebpftool's: LD_PRELOADed, it passes every ioctl() on to libc and counts those whose fd is a
 * /dev/nvidia* node (and those that failed); at exit it writes "calls failed" to $IOCTL_COUNT_FILE. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long calls, failed;

static int on_nvidia_node(int fd)
{
    char link[64], target[256];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0)
        return 0;
    target[n] = 0;
    return strncmp(target, "/dev/nvidia", 11) == 0;
}

int ioctl(int fd, unsigned long request, ...)
{
    static int (*real)(int, unsigned long, void *);
    if (!real)
        real = (int (*)(int, unsigned long, void *))dlsym(RTLD_NEXT, "ioctl");
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int ret = real(fd, request, arg);
    if (on_nvidia_node(fd)) {
        __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
        if (ret < 0)
            __atomic_add_fetch(&failed, 1, __ATOMIC_RELAXED);
    }
    return ret;
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("IOCTL_COUNT_FILE");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f) {
        fprintf(f, "%ld %ld\n", calls, failed);
        fclose(f);
    }
}

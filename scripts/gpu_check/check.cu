// The program scripts/gpu-device-check.sh traces on a machine with an NVIDIA GPU: CUDA runtime calls whose
// counts, bytes and outcome it knows itself, so ebpftool's figures can be checked against its own log.
// Built with -cudart shared, so that its calls go through libcudart.so (where ebpftool's uprobes are).
//
//   check ROUNDS COST_CALLS   ->  one JSON line on stdout: what it called, copied, leaked and launched
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void scale_kernel(float *x, float a, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] *= a;
}

__global__ void add_kernel(float *x, const float *y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] += y[i];
}

static const int N = 1 << 20;                 // floats per buffer: 4 MiB
static const size_t LEAK_BYTES = 3 << 20;     // allocated and never freed
static const size_t TOO_MUCH = (size_t)1 << 60;

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    int cost_calls = argc > 2 ? atoi(argv[2]) : 100000;
    size_t bytes = (size_t)N * sizeof(float);
    long mallocs = 0, frees = 0, memcpys = 0, launches = 0, syncs = 0, errors = 0;
    unsigned long long h2d = 0, d2h = 0;
    float *host = (float *)malloc(bytes), *x = nullptr, *y = nullptr, *leak = nullptr, *never = nullptr;
    for (int i = 0; i < N; i++)
        host[i] = 1.0f;

    mallocs += 2;
    cudaError_t ex = cudaMalloc(&x, bytes), ey = cudaMalloc(&y, bytes);
    errors += (ex != cudaSuccess) + (ey != cudaSuccess);
    int ok = ex == cudaSuccess && ey == cudaSuccess;   // else no usable GPU: the calls were still made
    for (int r = 0; ok && r < rounds; r++) {
        memcpys += 2;
        if (cudaMemcpy(x, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) errors++; else h2d += bytes;
        if (cudaMemcpy(y, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) errors++; else h2d += bytes;
        scale_kernel<<<(N + 255) / 256, 256>>>(x, 2.0f, N);
        add_kernel<<<(N + 255) / 256, 256>>>(x, y, N);
        launches += 2;
        syncs++;
        if (cudaDeviceSynchronize() != cudaSuccess) errors++;
        memcpys++;
        if (cudaMemcpy(host, x, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) errors++; else d2h += bytes;
    }
    mallocs++;
    if (cudaMalloc(&leak, LEAK_BYTES) != cudaSuccess) errors++;   // the deliberate leak
    mallocs++;
    if (cudaMalloc(&never, TOO_MUCH) == cudaSuccess) cudaFree(never); else errors++;   // the failing call
    if (ex == cudaSuccess) { frees++; if (cudaFree(x) != cudaSuccess) errors++; }
    if (ey == cudaSuccess) { frees++; if (cudaFree(y) != cudaSuccess) errors++; }

    // The cost per traced call: a traced call that returns at once (an idle stream), timed here.
    if (ok && cudaStreamSynchronize(0) != cudaSuccess) errors++;
    auto t0 = std::chrono::steady_clock::now();
    long loop_errors = 0;
    for (int i = 0; i < cost_calls; i++)
        loop_errors += cudaStreamSynchronize(0) != cudaSuccess;
    auto t1 = std::chrono::steady_clock::now();
    errors += loop_errors;
    double ns_per_call = std::chrono::duration<double, std::nano>(t1 - t0).count() / (cost_calls ? cost_calls : 1);

    printf("{\"gpu\": %d, \"rounds\": %d, \"result\": %.1f, \"calls\": {\"cudaMalloc\": %ld, \"cudaFree\": %ld, "
           "\"cudaMemcpy\": %ld, \"cudaLaunchKernel\": %ld, \"cudaDeviceSynchronize\": %ld, "
           "\"cudaStreamSynchronize\": %d}, \"errors\": %ld, \"h2d_bytes\": %llu, \"d2h_bytes\": %llu, "
           "\"leaked_bytes\": %zu, \"kernels\": [\"scale_kernel\", \"add_kernel\"], \"launches_each\": %d, "
           "\"cost_calls\": %d, \"ns_per_call\": %.1f}\n",
           ok, rounds, ok ? host[0] : -1.0f, mallocs, frees, memcpys, launches, syncs, cost_calls + ok, errors,
           h2d, d2h, leak ? LEAK_BYTES : 0, ok ? rounds : 0, cost_calls, ns_per_call);
    free(host);
    return 0;
}

// Reading codes back: the fused RVQ decode (gather + sum over stages) and the EMA statistics.
#include "common.cuh"
#include "rvqfast_cuda.cuh"

namespace rvqfast {

// Thread per output element; sums in stage order from 0.f, the reference's order, so the result
// is bitwise equal to it. idx == -1 skips the stage.
__global__ void rvq_decode_kernel(const int64_t* __restrict__ idx, const float* __restrict__ cbs, int64_t n,
                                  int64_t q, int64_t k, int64_t d, float* __restrict__ out) {
    const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= n * d) return;
    const int64_t row = e / d, col = e % d;
    float acc = 0.f;
    for (int64_t s = 0; s < q; ++s) {
        const int64_t j = idx[row * q + s];
        if (j >= 0) acc += cbs[(s * k + j) * d + col];
    }
    out[e] = acc;
}

// Thread per input element: scatter into the row's code with fp32 atomics (column 0 also counts).
__global__ void ema_stats_kernel(const float* __restrict__ x, const int64_t* __restrict__ idx, int64_t n, int64_t d,
                                 float* __restrict__ counts, float* __restrict__ sums) {
    const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= n * d) return;
    const int64_t row = e / d, col = e % d;
    const int64_t j = idx[row];
    if (j < 0) return;
    if (col == 0) atomicAdd(counts + j, 1.f);
    atomicAdd(sums + j * d + col, x[e]);
}

}  // namespace rvqfast

extern "C" int rvqfast_cuda_rvq_decode(const int64_t* idx, const float* codebooks, int64_t n, int64_t q, int64_t k,
                                       int64_t d, float* out, cudaStream_t stream) {
    if (n <= 0 || d <= 0) return cudaSuccess;
    rvqfast::rvq_decode_kernel<<<rvqfast::blocks_for(n * d, 256), 256, 0, stream>>>(idx, codebooks, n, q, k, d, out);
    return cudaGetLastError();
}

extern "C" int rvqfast_cuda_ema_stats(const float* x, const int64_t* idx, int64_t n, int64_t d, int64_t k,
                                      float* counts, float* sums, cudaStream_t stream) {
    cudaError_t e = cudaMemsetAsync(counts, 0, sizeof(float) * k, stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(sums, 0, sizeof(float) * k * d, stream);
    if (e != cudaSuccess) return e;
    if (n <= 0 || d <= 0) return cudaSuccess;
    rvqfast::ema_stats_kernel<<<rvqfast::blocks_for(n * d, 256), 256, 0, stream>>>(x, idx, n, d, counts, sums);
    return cudaGetLastError();
}

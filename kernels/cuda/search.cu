// Nearest-code search and RVQ encode: TF32 tensor-core screening + exact fp32 re-rank.
//
// Pass 1 (screen_tf32_kernel): a block owns 64 rows and streams the centred codebook in tiles of
// 64 codes; WMMA m16n16k8 TF32 products give approximate centred distances
// d~(j) = ‖c_j−μ‖² − 2 (x−μ)·(c_j−μ), and each row keeps its RVQFAST_CUDA_CANDIDATES smallest
// (index, d~) in registers. It writes the candidate indices and the largest kept d~ (the bound L:
// every code not kept has d~ >= L).
//
// Pass 2 (rerank_kernel): one warp per row recomputes ‖x − c‖² exactly in fp32 for the kept
// candidates and takes the smallest (ties -> lowest index). The TF32 error of d~ is bounded by
//   E = (2^-9 + (D + 8) 2^-22) (‖x−μ‖ + max_j ‖c_j−μ‖)²
// (TF32 rounding 2^-11 per operand, fp32 accumulation over D terms, Cauchy-Schwarz, with slack),
// so when the winner's exact centred distance is < L − E no excluded code can beat it and the
// row is certified. Otherwise (rare: many codes within E of the best) the warp scans all K codes
// exactly. For RVQ encode the same warp then subtracts the winner from the residual and adds it to
// the quantized output, in fp32 and in stage order (the reference's arithmetic).
#include <math.h>
#include <mma.h>

#include "common.cuh"
#include "rvqfast_cuda.cuh"

namespace rvqfast {

constexpr int KC = RVQFAST_CUDA_CANDIDATES;
constexpr int BM = 64;           // rows per block
constexpr int BN = 64;           // codes per tile
constexpr int BK = 32;           // D chunk staged in shared memory
constexpr int LDS = BK + 4;      // padded leading dims (multiples of 4 floats, 32-byte aligned tiles)
constexpr int LDC = BN + 4;
constexpr int SCREEN_THREADS = 128;  // 4 warps, each a 32x32 sub-tile (2x2 WMMA fragments)
constexpr int RERANK_WARPS = 4;

__device__ __forceinline__ void insert_candidate(float (&td)[KC], int (&ti)[KC], float d, int j) {
    // Fully unrolled so the lists stay in registers.
    if (d < td[KC - 1]) {
        td[KC - 1] = d;
        ti[KC - 1] = j;
#pragma unroll
        for (int s = KC - 1; s > 0; --s) {
            if (td[s] < td[s - 1]) {
                const float tf = td[s]; td[s] = td[s - 1]; td[s - 1] = tf;
                const int tj = ti[s]; ti[s] = ti[s - 1]; ti[s - 1] = tj;
            }
        }
    }
}

__global__ void __launch_bounds__(SCREEN_THREADS)
screen_tf32_kernel(const float* x, const float* __restrict__ mu, const float* __restrict__ cc,
                   const float* __restrict__ cn, int64_t n, int64_t k, int64_t d,
                   int32_t* __restrict__ cand, float* __restrict__ bound) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    __shared__ __align__(128) float xs[BM * LDS];
    __shared__ __align__(128) float cs[BN * LDS];
    __shared__ __align__(128) float ss[BM * LDC];

    const int tid = threadIdx.x;
    const int warp = tid / 32;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * BM;
    const int wr = (warp / 2) * 32;
    const int wc = (warp % 2) * 32;
    // Scan assignment: two threads per row (adjacent lanes), interleaved columns.
    const int my_row = tid / 2;
    const int my_half = tid % 2;

    float td[KC];
    int ti[KC];
#pragma unroll
    for (int s = 0; s < KC; ++s) { td[s] = INFINITY; ti[s] = -1; }

    for (int64_t n0 = 0; n0 < k; n0 += BN) {
        wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[2][2];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

        for (int64_t k0 = 0; k0 < d; k0 += BK) {
            // Stage centred rows and codes (zero-padded past N, K, D), rounded to TF32 once here.
            for (int i = tid; i < BM * BK; i += SCREEN_THREADS) {
                const int r = i / BK, c = i % BK;
                const int64_t gc = k0 + c;
                const int64_t gr = row0 + r, gk = n0 + r;
                float v = 0.f, w = 0.f;
                if (gc < d) {
                    if (gr < n) v = x[gr * d + gc] - mu[gc];
                    if (gk < k) w = cc[gk * d + gc];
                }
                xs[r * LDS + c] = wmma::__float_to_tf32(v);
                cs[r * LDS + c] = wmma::__float_to_tf32(w);
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < BK; kk += 8) {
                wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a[2];
                // Codes are stored [code][dim]: as the K x N operand that is column-major.
                wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> b[2];
#pragma unroll
                for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], xs + (wr + 16 * i) * LDS + kk, LDS);
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], cs + (wc + 16 * j) * LDS + kk, LDS);
#pragma unroll
                for (int i = 0; i < 2; ++i)
#pragma unroll
                    for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
            }
            __syncthreads();
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j)
                wmma::store_matrix_sync(ss + (wr + 16 * i) * LDC + wc + 16 * j, acc[i][j], LDC, wmma::mem_row_major);
        __syncthreads();
        for (int c = my_half; c < BN; c += 2) {
            const int64_t j = n0 + c;
            if (j < k) insert_candidate(td, ti, __ldg(cn + j) - 2.f * ss[my_row * LDC + c], static_cast<int>(j));
        }
        __syncthreads();  // ss is rewritten by the next tile
    }

    // Merge the two half-lists of a row (partner = adjacent lane). The merged k-th value is <= both
    // halves' k-th values, so it bounds every code dropped by either half or by the merge.
    float od[KC];
    int oi[KC];
#pragma unroll
    for (int s = 0; s < KC; ++s) {
        od[s] = __shfl_xor_sync(0xffffffffu, td[s], 1);
        oi[s] = __shfl_xor_sync(0xffffffffu, ti[s], 1);
    }
#pragma unroll
    for (int s = 0; s < KC; ++s)
        if (oi[s] >= 0) insert_candidate(td, ti, od[s], oi[s]);
    const int64_t row = row0 + my_row;
    if (my_half == 0 && row < n) {
#pragma unroll
        for (int s = 0; s < KC; ++s) cand[row * KC + s] = ti[s];
        bound[row] = td[KC - 1];  // +inf when fewer than KC codes exist: nothing was excluded
    }
#else
    // TF32 WMMA needs sm_80+; the launcher refuses older devices before launching.
    __trap();
#endif
}

// One warp per row. x: rows searched (read). When `residual` is non-NULL (RVQ encode; it may alias
// x) the winner is subtracted from it and added to `quant`.
__global__ void __launch_bounds__(RERANK_WARPS * 32)
rerank_kernel(const float* x, const float* __restrict__ mu, const float* __restrict__ cb,
              const float* __restrict__ cmax2, int64_t n, int64_t k, int64_t d,
              const int32_t* __restrict__ cand, const float* __restrict__ bound, int certify,
              int64_t* __restrict__ out_idx, int64_t idx_stride, float* __restrict__ out_sqdist,
              float* residual, float* __restrict__ quant, unsigned int* fallbacks) {
    const int lane = threadIdx.x & 31;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * RERANK_WARPS + threadIdx.x / 32;
    if (row >= n) return;  // uniform per warp
    const float* xr = x + row * d;

    float best = INFINITY;
    int64_t bi = 0;
#pragma unroll
    for (int s = 0; s < KC; ++s) {
        const int j = cand[row * KC + s];
        if (j < 0) continue;
        const float dj = warp_sqdist(xr, cb + static_cast<int64_t>(j) * d, d, lane);
        if (dj < best || (dj == best && j < bi)) { best = dj; bi = j; }
    }
    if (certify) {
        const float lim = bound[row];
        if (isfinite(lim)) {
            float xs2 = 0.f;
            for (int64_t i = lane; i < d; i += 32) {
                const float t = xr[i] - mu[i];
                xs2 = fmaf(t, t, xs2);
            }
            xs2 = warp_sum(xs2);
            const float r = sqrtf(xs2) + sqrtf(*cmax2);
            const float err = (ldexpf(1.f, -9) + static_cast<float>(d + 8) * ldexpf(1.f, -22)) * r * r;
            if (!(best - xs2 < lim - err)) {
                // Not certified: exact scan of every code (ties -> lowest index).
                best = INFINITY;
                bi = 0;
                for (int64_t j = 0; j < k; ++j) {
                    const float dj = warp_sqdist(xr, cb + j * d, d, lane);
                    if (dj < best) { best = dj; bi = j; }
                }
                if (lane == 0 && fallbacks != nullptr) atomicAdd(fallbacks, 1u);
            }
        }
    }
    if (lane == 0) {
        out_idx[row * idx_stride] = bi;
        if (out_sqdist != nullptr) out_sqdist[row] = best;
    }
    if (residual != nullptr) {
        const float* c = cb + bi * d;
        float* rr = residual + row * d;
        float* qr = quant + row * d;
        for (int64_t i = lane; i < d; i += 32) {
            const float v = c[i];
            rr[i] -= v;
            qr[i] += v;
        }
    }
}

// Per stage: mu (D), centred codes cc (K, D), their squared norms cn (K) and max squared norm.
// Block = 32 dims x 8 code slices; the slice sums are combined in a fixed order (deterministic).
__global__ void codebook_mean_kernel(const float* __restrict__ cbs, int64_t k, int64_t d, float* __restrict__ mu) {
    __shared__ float part[8][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t dim = static_cast<int64_t>(blockIdx.x) * 32 + tx;
    const float* cb = cbs + static_cast<int64_t>(blockIdx.y) * k * d;
    float s = 0.f;
    if (dim < d)
        for (int64_t j = ty; j < k; j += 8) s += cb[j * d + dim];
    part[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && dim < d) {
        float t = 0.f;
        for (int i = 0; i < 8; ++i) t += part[i][tx];
        mu[static_cast<int64_t>(blockIdx.y) * d + dim] = t / static_cast<float>(k);
    }
}

// One warp per (stage, code): cc = c − mu, cn = ‖cc‖², cmax2[stage] = max cn (non-negative floats
// order like their bit patterns, so an integer atomicMax works).
__global__ void centre_codes_kernel(const float* __restrict__ cbs, const float* __restrict__ mu, int64_t q,
                                    int64_t k, int64_t d, float* __restrict__ cc, float* __restrict__ cn,
                                    float* __restrict__ cmax2) {
    const int lane = threadIdx.x & 31;
    const int64_t code = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (code >= q * k) return;
    const int64_t stage = code / k;
    const float* c = cbs + code * d;
    const float* m = mu + stage * d;
    float* o = cc + code * d;
    float s = 0.f;
    for (int64_t i = lane; i < d; i += 32) {
        const float t = c[i] - m[i];
        o[i] = t;
        s = fmaf(t, t, s);
    }
    s = warp_sum(s);
    if (lane == 0) {
        cn[code] = s;
        atomicMax(reinterpret_cast<int*>(cmax2 + stage), __float_as_int(s));
    }
}

namespace {

constexpr size_t kAlign = 256;

size_t align_up(size_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

struct Workspace {
    float* mu;
    float* cc;
    float* cn;
    float* cmax2;
    int32_t* cand;
    float* bound;
    float* residual;
};

Workspace carve(void* base, int64_t n, int64_t q, int64_t k, int64_t d) {
    char* p = static_cast<char*>(base);
    Workspace w;
    w.mu = reinterpret_cast<float*>(p); p += align_up(sizeof(float) * q * d);
    w.cc = reinterpret_cast<float*>(p); p += align_up(sizeof(float) * q * k * d);
    w.cn = reinterpret_cast<float*>(p); p += align_up(sizeof(float) * q * k);
    w.cmax2 = reinterpret_cast<float*>(p); p += align_up(sizeof(float) * q);
    w.cand = reinterpret_cast<int32_t*>(p); p += align_up(sizeof(int32_t) * n * KC);
    w.bound = reinterpret_cast<float*>(p); p += align_up(sizeof(float) * n);
    w.residual = reinterpret_cast<float*>(p);
    return w;
}

cudaError_t check_device() {
    int dev = 0, major = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e != cudaSuccess) return e;
    return major >= 8 ? cudaSuccess : cudaErrorNoKernelImageForDevice;
}

cudaError_t prepare(const float* cbs, int64_t q, int64_t k, int64_t d, const Workspace& w, cudaStream_t stream) {
    cudaError_t e = cudaMemsetAsync(w.cmax2, 0, sizeof(float) * q, stream);
    if (e != cudaSuccess) return e;
    codebook_mean_kernel<<<dim3(blocks_for(d, 32), static_cast<unsigned int>(q)), dim3(32, 8), 0, stream>>>(cbs, k, d, w.mu);
    centre_codes_kernel<<<blocks_for(q * k, 8), 256, 0, stream>>>(cbs, w.mu, q, k, d, w.cc, w.cn, w.cmax2);
    return cudaGetLastError();
}

// One stage: screen `rows` against stage `s`, then re-rank (and update the residual if asked).
void search_stage(const float* rows, const float* cb, int64_t n, int64_t k, int64_t d, int64_t s, int certify,
                  const Workspace& w, int64_t* out_idx, int64_t idx_stride, float* out_sqdist, float* residual,
                  float* quant, unsigned int* fallbacks, cudaStream_t stream) {
    screen_tf32_kernel<<<blocks_for(n, BM), SCREEN_THREADS, 0, stream>>>(
        rows, w.mu + s * d, w.cc + s * k * d, w.cn + s * k, n, k, d, w.cand, w.bound);
    rerank_kernel<<<blocks_for(n, RERANK_WARPS), RERANK_WARPS * 32, 0, stream>>>(
        rows, w.mu + s * d, cb + s * k * d, w.cmax2 + s, n, k, d, w.cand, w.bound, certify, out_idx, idx_stride,
        out_sqdist, residual, quant, fallbacks);
}

}  // namespace
}  // namespace rvqfast

extern "C" size_t rvqfast_cuda_workspace_bytes(int64_t n, int64_t q, int64_t k, int64_t d) {
    using rvqfast::align_up;
    return align_up(sizeof(float) * q * d) + align_up(sizeof(float) * q * k * d) + align_up(sizeof(float) * q * k) +
           align_up(sizeof(float) * q) + align_up(sizeof(int32_t) * n * rvqfast::KC) + align_up(sizeof(float) * n) +
           align_up(sizeof(float) * n * d);
}

extern "C" int rvqfast_cuda_nearest_code(const float* x, const float* codebook, int64_t n, int64_t k, int64_t d,
                                         int certify, int64_t* out_idx, float* out_sqdist, void* workspace,
                                         unsigned int* fallbacks, cudaStream_t stream) {
    using namespace rvqfast;
    if (n <= 0 || k <= 0 || d <= 0 || k > INT32_MAX) return cudaErrorInvalidValue;
    cudaError_t e = check_device();
    if (e != cudaSuccess) return e;
    const Workspace w = carve(workspace, n, 1, k, d);
    e = prepare(codebook, 1, k, d, w, stream);
    if (e != cudaSuccess) return e;
    search_stage(x, codebook, n, k, d, 0, certify, w, out_idx, 1, out_sqdist, nullptr, nullptr, fallbacks, stream);
    return cudaGetLastError();
}

extern "C" int rvqfast_cuda_rvq_encode(const float* x, const float* codebooks, int64_t n, int64_t q, int64_t k,
                                       int64_t d, int certify, int64_t* out_idx, float* out_quant, void* workspace,
                                       unsigned int* fallbacks, cudaStream_t stream) {
    using namespace rvqfast;
    if (n <= 0 || q <= 0 || k <= 0 || d <= 0 || k > INT32_MAX) return cudaErrorInvalidValue;
    cudaError_t e = check_device();
    if (e != cudaSuccess) return e;
    const Workspace w = carve(workspace, n, q, k, d);
    e = prepare(codebooks, q, k, d, w, stream);
    if (e != cudaSuccess) return e;
    e = cudaMemcpyAsync(w.residual, x, sizeof(float) * n * d, cudaMemcpyDeviceToDevice, stream);
    if (e != cudaSuccess) return e;
    e = cudaMemsetAsync(out_quant, 0, sizeof(float) * n * d, stream);
    if (e != cudaSuccess) return e;
    for (int64_t s = 0; s < q; ++s)
        search_stage(w.residual, codebooks, n, k, d, s, certify, w, out_idx + s, q, nullptr, w.residual, out_quant,
                     fallbacks, stream);
    return cudaGetLastError();
}

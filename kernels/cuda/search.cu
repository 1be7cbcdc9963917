// Nearest-code search and RVQ encode: tensor-core screening + exact fp32 re-rank.
//
// Pass 1 (screen_kernel): a block owns 64 rows and streams the centred codebook in tiles of 64
// codes; WMMA products (TF32 m16n16k8 or BF16 m16n16k16, fp32 accumulate) give approximate centred
// distances s_j = ‖c_j−μ‖² − 2 (x−μ)·(c_j−μ), and each row keeps its RVQFAST_CUDA_CANDIDATES
// smallest keys in registers. It writes the candidate indices and the largest kept key (the
// bound L: every code not kept has a key >= L).
//   TF32 (RVQFAST_CUDA_TF32_CERTIFIED): key = s_j.
//   BF16 certified: key = a rigorous lower bound s_j − E_j of T_j = ‖x−c_j‖² − ‖x−μ‖², with a
//   per-row and per-code error E_j from measured bf16 rounding errors (docs/gpu.md), evaluated
//   with directed rounding. BF16 approximate: key = s_j.
//
// Pass 2 (rerank_kernel): one warp per row recomputes ‖x − c‖² exactly in fp32 for the kept
// candidates and takes the smallest (ties -> lowest index). Certification:
//   TF32: the error of s_j is bounded globally by
//     E = (2^-9 + (D + 8) 2^-22) (‖x−μ‖ + max_j ‖c_j−μ‖)²
//   (TF32 rounding 2^-11 per operand, fp32 accumulation over D terms, Cauchy-Schwarz, with
//   slack); certified when the winner's exact centred distance is < L − E.
//   BF16: certified when a rigorous upper bound of the winner's T is < L.
// Otherwise (rare: many codes within the error of the best) the warp scans all K codes exactly.
// For RVQ encode the same warp then subtracts the winner from the residual, in fp32 and in stage
// order (the reference's arithmetic); the quantized sum is a final stage-order decode.
#include <cuda_bf16.h>
#include <math.h>
#include <mma.h>

#include "common.cuh"
#include "rvqfast_cuda.cuh"

namespace rvqfast {

constexpr int KC = RVQFAST_CUDA_CANDIDATES;
constexpr int BM = 64;           // rows per block
constexpr int BN = 64;           // codes per tile
constexpr int BK = 32;           // D chunk staged in shared memory
constexpr int LDC = BN + 4;      // padded leading dim of the distance tile (32-byte aligned rows)
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

// Directed-rounding helpers for the BF16 bound: every quantity is an upper (_ru) or lower (_rd)
// bound by construction, so the fp32 evaluation of the bound needs no extra slack.
constexpr float kV = 5.9604644775390625e-8f;     // 2^-24, fp32 unit roundoff
constexpr float kTiny = 1.4012984643248171e-45f;  // 2^-149, smallest subnormal

// gamma_m = m v / (1 - m v), rounded up (m < 2^20, so m v is exact).
__device__ __forceinline__ float gamma_up(float m) { return __fdiv_ru(m * kV, __fsub_rd(1.f, m * kV)); }

// Upper bound of sqrt(S) from an fp32 sum sigma of m-deep non-negative terms: |sigma - S| <= g S + m 2^-149.
__device__ __forceinline__ float norm_up(float sigma, float m) {
    return __fsqrt_ru(__fdiv_ru(__fmaf_ru(m, kTiny, sigma), __fsub_rd(1.f, gamma_up(m))));
}

// Per code for the BF16 bound: (p, q, w) with E_k = e_a p + Abar q + w + r (docs/gpu.md).
struct CodeErr {
    float p, q, w, unused;
};

template <bool BF16>
struct ScreenTile;

template <>
struct ScreenTile<false> {  // TF32: fp32 storage rounded to TF32 once when staged, m16n16k8
    using T = float;
    static constexpr int LD = BK + 4;
    static constexpr int KSTEP = 8;
    using Prec = nvcuda::wmma::precision::tf32;
    __device__ static T cvt(float v) { return nvcuda::wmma::__float_to_tf32(v); }
};

template <>
struct ScreenTile<true> {  // BF16, round to nearest even, m16n16k16
    using T = __nv_bfloat16;
    static constexpr int LD = BK + 8;  // multiple of 8 elements (16 bytes), as WMMA loads need
    static constexpr int KSTEP = 16;
    using Prec = __nv_bfloat16;
    __device__ static T cvt(float v) { return __float2bfloat16_rn(v); }
};

// Pass 1. BF16 = false: candidates ranked by the TF32 distance d~; the bound written is the
// largest kept d~ (rerank_kernel applies the global TF32 error bound). BF16 = true: ranked by
// lb_k = s_k - E_k when `lower` (certified; every excluded code then has T_k >= the bound written),
// by s_k otherwise (approximate).
template <bool BF16>
__global__ void __launch_bounds__(SCREEN_THREADS)
screen_kernel(const float* x, const float* __restrict__ mu, const float* __restrict__ cc,
              const float* __restrict__ cn, const CodeErr* __restrict__ cerr, int lower, int64_t n, int64_t k,
              int64_t d, int32_t* __restrict__ cand, float* __restrict__ bound) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    using Tile = ScreenTile<BF16>;
    using T = typename Tile::T;
    constexpr int LD = Tile::LD;
    constexpr int KS = Tile::KSTEP;
    __shared__ __align__(128) T xs[BM * LD];
    __shared__ __align__(128) T cs[BN * LD];
    __shared__ __align__(128) float ss[BM * LDC];

    const int tid = threadIdx.x;
    const int warp = tid / 32;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * BM;
    const int wr = (warp / 2) * 32;
    const int wc = (warp % 2) * 32;
    // Scan assignment: two threads per row (adjacent lanes), interleaved columns.
    const int my_row = tid / 2;
    const int my_half = tid % 2;
    const int64_t row = row0 + my_row;

    // BF16 bound, per row: e_a >= ||a - abar||, abar_n >= ||abar||, r = 2.01 v A^2 + underflow slack.
    float e_a = 0.f, abar_n = 0.f, r_row = 0.f;
    if (BF16 && lower) {
        float sa = 0.f, sb = 0.f, se = 0.f;
        if (row < n) {
            for (int64_t i = my_half; i < d; i += 2) {
                const float a = x[row * d + i] - mu[i];  // the same fp32 value the staging rounds
                const float ab = __bfloat162float(__float2bfloat16_rn(a));
                const float e = a - ab;  // exact: the low bits of a
                sa = fmaf(a, a, sa);
                sb = fmaf(ab, ab, sb);
                se = fmaf(e, e, se);
            }
        }
        sa += __shfl_xor_sync(0xffffffffu, sa, 1);
        sb += __shfl_xor_sync(0xffffffffu, sb, 1);
        se += __shfl_xor_sync(0xffffffffu, se, 1);
        const float m = static_cast<float>(d + 6);
        const float a_n = norm_up(sa, m);
        abar_n = norm_up(sb, m);
        e_a = norm_up(se, m);
        // Tensor-core underflow: <= 2 D' flushes of < 2^-126 each, doubled (docs/gpu.md).
        const float dp = static_cast<float>(((d + BK - 1) / BK) * BK);
        r_row = __fmaf_ru(2.01f * kV, __fmul_ru(a_n, a_n), __fmul_ru(__fmaf_ru(2.f, dp, 64.f), 0x1p-124f));
    }

    float td[KC];
    int ti[KC];
#pragma unroll
    for (int s = 0; s < KC; ++s) { td[s] = INFINITY; ti[s] = -1; }

    for (int64_t n0 = 0; n0 < k; n0 += BN) {
        wmma::fragment<wmma::accumulator, 16, 16, KS, float> acc[2][2];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

        for (int64_t k0 = 0; k0 < d; k0 += BK) {
            // Stage centred rows and codes (zero-padded past N, K, D), rounded once here.
            for (int i = tid; i < BM * BK; i += SCREEN_THREADS) {
                const int r = i / BK, c = i % BK;
                const int64_t gc = k0 + c;
                const int64_t gr = row0 + r, gk = n0 + r;
                float v = 0.f, w = 0.f;
                if (gc < d) {
                    if (gr < n) v = x[gr * d + gc] - mu[gc];
                    if (gk < k) w = cc[gk * d + gc];
                }
                xs[r * LD + c] = Tile::cvt(v);
                cs[r * LD + c] = Tile::cvt(w);
            }
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < BK; kk += KS) {
                wmma::fragment<wmma::matrix_a, 16, 16, KS, typename Tile::Prec, wmma::row_major> a[2];
                // Codes are stored [code][dim]: as the K x N operand that is column-major.
                wmma::fragment<wmma::matrix_b, 16, 16, KS, typename Tile::Prec, wmma::col_major> b[2];
#pragma unroll
                for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], xs + (wr + 16 * i) * LD + kk, LD);
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], cs + (wc + 16 * j) * LD + kk, LD);
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
            if (j >= k) continue;
            float v = __ldg(cn + j) - 2.f * ss[my_row * LDC + c];  // s_j (d~ for TF32)
            if (BF16 && lower) {
                const CodeErr ce = cerr[j];
                const float err = __fmaf_ru(e_a, ce.p, __fmaf_ru(abar_n, ce.q, __fadd_ru(ce.w, r_row)));
                v = __fsub_rd(v, err);
                if (isnan(v)) v = -INFINITY;  // never drop a code on NaN; it forces the exact scan
            }
            insert_candidate(td, ti, v, static_cast<int>(j));
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
    if (my_half == 0 && row < n) {
#pragma unroll
        for (int s = 0; s < KC; ++s) cand[row * KC + s] = ti[s];
        bound[row] = td[KC - 1];  // +inf when fewer than KC codes exist: nothing was excluded
    }
#else
    // Tensor-core WMMA needs sm_80+; the launcher refuses older devices before launching.
    __trap();
#endif
}

// One warp per row. x: rows searched (read). When `residual` is non-NULL (RVQ encode; it may alias
// x) the winner is subtracted from it, and added to `quant` when that is non-NULL.
__global__ void __launch_bounds__(RERANK_WARPS * 32)
rerank_kernel(const float* x, const float* __restrict__ mu, const float* __restrict__ cb,
              const float* __restrict__ cmax2, int64_t n, int64_t k, int64_t d,
              const int32_t* __restrict__ cand, const float* __restrict__ bound, int mode,
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
    if (mode != RVQFAST_CUDA_BF16_APPROX) {
        const float lim = bound[row];
        bool certified = true;
        if (mode == RVQFAST_CUDA_BF16_CERTIFIED) {
            // Every excluded code k has T_k = ||x-c_k||^2 - ||x-mu||^2 >= lim (rigorous lower
            // bounds, docs/gpu.md). Certified when an upper bound U of the winner's T is < lim.
            // lim = +inf: fewer than KC codes, nothing was excluded.
            if (!(lim == INFINITY)) {
                float xs2 = 0.f;
                for (int64_t i = lane; i < d; i += 32) {
                    const float t = xr[i] - mu[i];
                    xs2 = fmaf(t, t, xs2);
                }
                xs2 = warp_sum(xs2);
                // |fl(sum) - S| <= eta S + alpha for both fp32 sums (D + 6 roundings deep).
                const float eta = __fadd_ru(gamma_up(static_cast<float>(d + 6)), 3.f * kV);
                const float alpha = __fmul_ru(static_cast<float>(d + 32), kTiny);
                const float s_up = __fmul_ru(__fadd_ru(best, alpha), __fmaf_ru(2.f, eta, 1.f));
                const float p_lo = fmaxf(0.f, __fmul_rd(__fsub_rd(xs2, alpha), __fmaf_rd(-2.f, eta, 1.f)));
                certified = __fsub_ru(s_up, p_lo) < lim;  // false on NaN
            }
        } else if (isfinite(lim)) {  // TF32: global bound
            float xs2 = 0.f;
            for (int64_t i = lane; i < d; i += 32) {
                const float t = xr[i] - mu[i];
                xs2 = fmaf(t, t, xs2);
            }
            xs2 = warp_sum(xs2);
            const float r = sqrtf(xs2) + sqrtf(*cmax2);
            const float err = (ldexpf(1.f, -9) + static_cast<float>(d + 8) * ldexpf(1.f, -22)) * r * r;
            certified = best - xs2 < lim - err;
        }
        if (!certified) {
            // Exact scan of every code (ties -> lowest index).
            best = INFINITY;
            bi = 0;
            for (int64_t j = 0; j < k; ++j) {
                const float dj = warp_sqdist(xr, cb + j * d, d, lane);
                if (dj < best) { best = dj; bi = j; }
            }
            if (lane == 0 && fallbacks != nullptr) atomicAdd(fallbacks, 1u);
        }
    }
    if (lane == 0) {
        out_idx[row * idx_stride] = bi;
        if (out_sqdist != nullptr) out_sqdist[row] = best;
    }
    if (residual != nullptr) {
        const float* c = cb + bi * d;
        float* rr = residual + row * d;
        for (int64_t i = lane; i < d; i += 32) rr[i] -= c[i];
        if (quant != nullptr) {
            float* qr = quant + row * d;
            for (int64_t i = lane; i < d; i += 32) qr[i] += c[i];
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
// order like their bit patterns, so an integer atomicMax works), and, when cerr is non-NULL, the
// code's terms of the BF16 error bound (docs/gpu.md):
//   p = 2 B,  q = 2 e + (2 g' + 2.01 v) Bbar,  w = (g + 5.1 v) B^2
// with B >= ||b||, Bbar >= ||bf16(b)||, e >= ||b - bf16(b)||, g = gamma_{D+6} (fp32 sums) and
// g' = gamma_{2D'+16} at unit 2v (tensor-core accumulation, D' = D rounded up to BK).
__global__ void centre_codes_kernel(const float* __restrict__ cbs, const float* __restrict__ mu, int64_t q,
                                    int64_t k, int64_t d, float* __restrict__ cc, float* __restrict__ cn,
                                    float* __restrict__ cmax2, CodeErr* __restrict__ cerr) {
    const int lane = threadIdx.x & 31;
    const int64_t code = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
    if (code >= q * k) return;
    const int64_t stage = code / k;
    const float* c = cbs + code * d;
    const float* m = mu + stage * d;
    float* o = cc + code * d;
    float s = 0.f, sb = 0.f, se = 0.f;
    for (int64_t i = lane; i < d; i += 32) {
        const float t = c[i] - m[i];
        o[i] = t;
        s = fmaf(t, t, s);
        if (cerr != nullptr) {
            const float tb = __bfloat162float(__float2bfloat16_rn(t));
            const float e = t - tb;  // exact
            sb = fmaf(tb, tb, sb);
            se = fmaf(e, e, se);
        }
    }
    s = warp_sum(s);
    if (cerr != nullptr) {
        sb = warp_sum(sb);
        se = warp_sum(se);
    }
    if (lane == 0) {
        cn[code] = s;
        atomicMax(reinterpret_cast<int*>(cmax2 + stage), __float_as_int(s));
        if (cerr != nullptr) {
            const float md = static_cast<float>(d + 6);
            const float b = norm_up(s, md), bb = norm_up(sb, md), e = norm_up(se, md);
            const float dp = static_cast<float>(((d + BK - 1) / BK) * BK);
            const float g2 = 2.f * gamma_up(2.f * __fmaf_ru(2.f, dp, 16.f));  // 2 g', unit 2v
            CodeErr ce;
            ce.p = 2.f * b;
            ce.q = __fmaf_ru(__fmaf_ru(2.01f, kV, g2), bb, 2.f * e);
            ce.w = __fmul_ru(__fmaf_ru(5.1f, kV, gamma_up(md)), __fmul_ru(b, b));
            ce.unused = 0.f;
            cerr[code] = ce;
        }
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
    CodeErr* cerr;
    int32_t* cand;
    float* bound;
};

// Byte sizes of the workspace parts, in carve order.
void part_sizes(int64_t n, int64_t q, int64_t k, int64_t d, size_t (&b)[7]) {
    b[0] = sizeof(float) * q * d;
    b[1] = sizeof(float) * q * k * d;
    b[2] = sizeof(float) * q * k;
    b[3] = sizeof(float) * q;
    b[4] = sizeof(CodeErr) * q * k;
    b[5] = sizeof(int32_t) * n * KC;
    b[6] = sizeof(float) * n;
}

Workspace carve(void* base, int64_t n, int64_t q, int64_t k, int64_t d) {
    size_t b[7];
    part_sizes(n, q, k, d, b);
    char* p = static_cast<char*>(base);
    Workspace w;
    w.mu = reinterpret_cast<float*>(p); p += align_up(b[0]);
    w.cc = reinterpret_cast<float*>(p); p += align_up(b[1]);
    w.cn = reinterpret_cast<float*>(p); p += align_up(b[2]);
    w.cmax2 = reinterpret_cast<float*>(p); p += align_up(b[3]);
    w.cerr = reinterpret_cast<CodeErr*>(p); p += align_up(b[4]);
    w.cand = reinterpret_cast<int32_t*>(p); p += align_up(b[5]);
    w.bound = reinterpret_cast<float*>(p);
    return w;
}

cudaError_t check_args(int64_t n, int64_t q, int64_t k, int64_t d, int mode) {
    if (n <= 0 || q <= 0 || k <= 0 || d <= 0 || k > INT32_MAX) return cudaErrorInvalidValue;
    if (mode != RVQFAST_CUDA_TF32_CERTIFIED && mode != RVQFAST_CUDA_BF16_CERTIFIED && mode != RVQFAST_CUDA_BF16_APPROX)
        return cudaErrorInvalidValue;
    int dev = 0, major = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (e != cudaSuccess) return e;
    return major >= 8 ? cudaSuccess : cudaErrorNoKernelImageForDevice;
}

// The BF16 bound is only evaluated up to RVQFAST_CUDA_BF16_MAX_D (its gamma terms stay < 1%).
int effective_mode(int mode, int64_t d) {
    return mode == RVQFAST_CUDA_BF16_CERTIFIED && d > RVQFAST_CUDA_BF16_MAX_D ? RVQFAST_CUDA_TF32_CERTIFIED : mode;
}

cudaError_t prepare(const float* cbs, int64_t q, int64_t k, int64_t d, int mode, const Workspace& w,
                    cudaStream_t stream) {
    cudaError_t e = cudaMemsetAsync(w.cmax2, 0, sizeof(float) * q, stream);
    if (e != cudaSuccess) return e;
    codebook_mean_kernel<<<dim3(blocks_for(d, 32), static_cast<unsigned int>(q)), dim3(32, 8), 0, stream>>>(cbs, k, d, w.mu);
    centre_codes_kernel<<<blocks_for(q * k, 8), 256, 0, stream>>>(
        cbs, w.mu, q, k, d, w.cc, w.cn, w.cmax2, mode == RVQFAST_CUDA_BF16_CERTIFIED ? w.cerr : nullptr);
    return cudaGetLastError();
}

// One stage: screen `rows` against stage `s`, then re-rank (and update the residual if asked).
void search_stage(const float* rows, const float* cb, int64_t n, int64_t k, int64_t d, int64_t s, int mode,
                  const Workspace& w, int64_t* out_idx, int64_t idx_stride, float* out_sqdist, float* residual,
                  float* quant, unsigned int* fallbacks, cudaStream_t stream) {
    const float* mu = w.mu + s * d;
    const float* cc = w.cc + s * k * d;
    const float* cn = w.cn + s * k;
    if (mode == RVQFAST_CUDA_TF32_CERTIFIED)
        screen_kernel<false><<<blocks_for(n, BM), SCREEN_THREADS, 0, stream>>>(rows, mu, cc, cn, nullptr, 0, n, k, d,
                                                                               w.cand, w.bound);
    else
        screen_kernel<true><<<blocks_for(n, BM), SCREEN_THREADS, 0, stream>>>(
            rows, mu, cc, cn, w.cerr + s * k, mode == RVQFAST_CUDA_BF16_CERTIFIED, n, k, d, w.cand, w.bound);
    rerank_kernel<<<blocks_for(n, RERANK_WARPS), RERANK_WARPS * 32, 0, stream>>>(
        rows, mu, cb + s * k * d, w.cmax2 + s, n, k, d, w.cand, w.bound, mode, out_idx, idx_stride, out_sqdist,
        residual, quant, fallbacks);
}

}  // namespace
}  // namespace rvqfast

extern "C" size_t rvqfast_cuda_workspace_bytes(int64_t n, int64_t q, int64_t k, int64_t d) {
    size_t b[7], total = 0;
    rvqfast::part_sizes(n, q, k, d, b);
    for (size_t v : b) total += rvqfast::align_up(v);
    return total;
}

extern "C" int rvqfast_cuda_nearest_code(const float* x, const float* codebook, int64_t n, int64_t k, int64_t d,
                                         int mode, int64_t* out_idx, float* out_sqdist, void* workspace,
                                         unsigned int* fallbacks, cudaStream_t stream) {
    using namespace rvqfast;
    cudaError_t e = check_args(n, 1, k, d, mode);
    if (e != cudaSuccess) return e;
    mode = effective_mode(mode, d);
    const Workspace w = carve(workspace, n, 1, k, d);
    e = prepare(codebook, 1, k, d, mode, w, stream);
    if (e != cudaSuccess) return e;
    search_stage(x, codebook, n, k, d, 0, mode, w, out_idx, 1, out_sqdist, nullptr, nullptr, fallbacks, stream);
    return cudaGetLastError();
}

extern "C" int rvqfast_cuda_rvq_encode(const float* x, const float* codebooks, int64_t n, int64_t q, int64_t k,
                                       int64_t d, int mode, int64_t* out_idx, float* out_quant, void* workspace,
                                       unsigned int* fallbacks, cudaStream_t stream) {
    using namespace rvqfast;
    cudaError_t e = check_args(n, q, k, d, mode);
    if (e != cudaSuccess) return e;
    mode = effective_mode(mode, d);
    const Workspace w = carve(workspace, n, q, k, d);
    e = prepare(codebooks, q, k, d, mode, w, stream);
    if (e != cudaSuccess) return e;
    // The residual lives in out_quant (no N x D workspace): stage 0 reads x and writes x - c0 there.
    e = cudaMemcpyAsync(out_quant, x, sizeof(float) * n * d, cudaMemcpyDeviceToDevice, stream);
    if (e != cudaSuccess) return e;
    for (int64_t s = 0; s < q; ++s)
        search_stage(s == 0 ? x : out_quant, codebooks, n, k, d, s, mode, w, out_idx + s, q, nullptr, out_quant,
                     nullptr, fallbacks, stream);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    // quantized = the chosen codes summed from 0 in stage order: the same fp32 additions as the
    // reference's running sum, so bitwise equal to it.
    return rvqfast_cuda_rvq_decode(out_idx, codebooks, n, q, k, d, out_quant, stream);
}

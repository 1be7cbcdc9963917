#include "cpu/train_step.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/simd.h"

namespace rvqfast {
namespace cpu {
namespace {

// The loops below are plain C++ that the compiler vectorises; each has an AVX-512 clone picked
// at run time like the primitives in simd.cpp (same test hook: simd_level()).
#if defined(__x86_64__) && defined(__GNUC__)
#define RVQ_TRAIN_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define RVQ_HAVE_AVX512_CLONE 1
#else
#define RVQ_TRAIN_AVX512
#define RVQ_HAVE_AVX512_CLONE 0
#endif
#define RVQ_INLINE inline __attribute__((always_inline))

bool use_avx512() { return std::strcmp(simd_level(), "avx512") == 0; }

// Columns [d0, d1) of rows [0, N): out = r - c, sums[k] += r (rows in order).
RVQ_INLINE void update_cols(const float* __restrict r, const float* __restrict cb,
                            const int64_t* __restrict idx, int64_t N, int64_t D, int64_t d0,
                            int64_t d1, float* __restrict out, float* __restrict sums) {
  for (int64_t n = 0; n < N; ++n) {
    const float* __restrict rr = r + n * D;
    const float* __restrict c = cb + idx[n] * D;
    float* __restrict o = out + n * D;
    if (sums) {
      float* __restrict s = sums + idx[n] * D;
      for (int64_t d = d0; d < d1; ++d) {
        const float v = rr[d];
        o[d] = v - c[d];
        s[d] += v;
      }
    } else {
      for (int64_t d = d0; d < d1; ++d) o[d] = rr[d] - c[d];
    }
  }
}

void update_cols_default(const float* r, const float* cb, const int64_t* idx, int64_t N,
                         int64_t D, int64_t d0, int64_t d1, float* out, float* sums) {
  update_cols(r, cb, idx, N, D, d0, d1, out, sums);
}

RVQ_TRAIN_AVX512 void update_cols_avx512(const float* r, const float* cb, const int64_t* idx,
                                         int64_t N, int64_t D, int64_t d0, int64_t d1,
                                         float* out, float* sums) {
  update_cols(r, cb, idx, N, D, d0, d1, out, sums);
}

// The per-row scalars of the gradient, in the order and fp32 roundings of the torch definition
// (rvqfast.backends.reference.rvq_stages_grad). dots[j] = r_j . g.
RVQ_INLINE float row_coefficients(const float* dots, const float* sqnorm, const float* code_sq,
                                  const float* dist_sq, const float* commit, int64_t A,
                                  int64_t N, int64_t n, bool rotation, float* gamma,
                                  float* a_c) {
  constexpr float kEps = 1e-6f;
  constexpr float kEps2 = static_cast<float>(1e-6 * 1e-6);
  float total = rotation ? 0.0f : static_cast<float>(A);
  for (int64_t j = 0; j <= A; ++j) gamma[j] = 0.0f;
  if (rotation) {
    for (int64_t q = 0; q < A; ++q) {
      const float nz2 = sqnorm[q * N + n], nc2 = code_sq[q * N + n];
      const float zc = 0.5f * (nz2 + nc2 - dist_sq[q * N + n]);
      const float zg = dots[q], cg = dots[q] - dots[q + 1];
      const float nz = std::sqrt(nz2), nc = std::sqrt(nc2);
      const float nzc = std::max(nz, kEps), ncc = std::max(nc, kEps);
      const float ug = zg / nzc, qg = cg / ncc;
      const float pp = std::max(nz2 / (nzc * nzc) + nc2 / (ncc * ncc) + 2.0f * zc / (nzc * ncc), kEps2);
      const float k = 2.0f * (ug + qg) / pp;
      const float s = nc / nzc;
      const float az = s * (2.0f * qg - k) / nzc;
      a_c[q] = -s * k / ncc;
      total += s;
      gamma[q] = az + a_c[q];
    }
    for (int64_t q = 0; q < A; ++q) gamma[q + 1] -= a_c[q];
  }
  for (int64_t q = 0; q < A; ++q) gamma[q + 1] += commit[q];
  return total;
}

RVQ_INLINE void grad_rows(const float* __restrict res, const float* __restrict g,
                          const float* sqnorm, const float* code_sq, const float* dist_sq,
                          const float* commit, int64_t A, int64_t N, int64_t D, bool rotation,
                          float* __restrict grad, int64_t n0, int64_t n1) {
  std::vector<float> buf(3 * (A + 1));
  float* dots = buf.data();
  float* gamma = dots + (A + 1);
  float* a_c = gamma + (A + 1);
  const int64_t plane = N * D;
  constexpr int64_t kAhead = 4;  // rows prefetched ahead: the A+1 planes are separate streams
  for (int64_t n = n0; n < n1; ++n) {
    const float* __restrict gr = g + n * D;
    if (n + kAhead < n1) {
      for (int64_t j = 0; j <= A; ++j) {
        const char* p = reinterpret_cast<const char*>(res + j * plane + (n + kAhead) * D);
        for (int64_t b = 0; b < D * static_cast<int64_t>(sizeof(float)); b += 64) __builtin_prefetch(p + b);
      }
    }
    if (rotation) {
      for (int64_t j = 0; j <= A; ++j) {
        const float* __restrict rj = res + j * plane + n * D;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t d = 0; d < D; ++d) acc += rj[d] * gr[d];
        dots[j] = acc;
      }
    }
    const float s = row_coefficients(dots, sqnorm, code_sq, dist_sq, commit, A, N, n, rotation,
                                     gamma, a_c);
    float* __restrict o = grad + n * D;
    for (int64_t d = 0; d < D; ++d) o[d] = gr[d] * s;
    // Stage by stage, as the torch definition's addcmul_ sequence rounds.
    for (int64_t j = 0; j <= A; ++j) {
      const float* __restrict rj = res + j * plane + n * D;
      const float gj = gamma[j];
      for (int64_t d = 0; d < D; ++d) o[d] += rj[d] * gj;
    }
  }
}

void grad_rows_default(const float* res, const float* g, const float* sqnorm,
                       const float* code_sq, const float* dist_sq, const float* commit,
                       int64_t A, int64_t N, int64_t D, bool rotation, float* grad, int64_t n0,
                       int64_t n1) {
  grad_rows(res, g, sqnorm, code_sq, dist_sq, commit, A, N, D, rotation, grad, n0, n1);
}

RVQ_TRAIN_AVX512 void grad_rows_avx512(const float* res, const float* g, const float* sqnorm,
                                       const float* code_sq, const float* dist_sq,
                                       const float* commit, int64_t A, int64_t N, int64_t D,
                                       bool rotation, float* grad, int64_t n0, int64_t n1) {
  grad_rows(res, g, sqnorm, code_sq, dist_sq, commit, A, N, D, rotation, grad, n0, n1);
}

}  // namespace

void residual_update(const float* r, const float* codebook, const int64_t* idx, int64_t N,
                     int64_t D, int64_t K, float* out, float* counts, float* sums) {
  if (sums) {
    std::fill(counts, counts + K, 0.0f);
    std::memset(sums, 0, sizeof(float) * K * D);
    for (int64_t n = 0; n < N; ++n) counts[idx[n]] += 1.0f;
  }
  const bool wide = RVQ_HAVE_AVX512_CLONE && use_avx512();
  // Threads own column slices (as in ema_stats): each sum sees the rows in order, so the
  // statistics are bitwise independent of the thread count, and no per-thread K x D copies.
  at::parallel_for(0, D, 16, [&](int64_t d0, int64_t d1) {
    if (wide)
      update_cols_avx512(r, codebook, idx, N, D, d0, d1, out, sums);
    else
      update_cols_default(r, codebook, idx, N, D, d0, d1, out, sums);
  });
}

void rvq_stages_grad(const float* res, const float* g, const float* sqnorm, const float* code_sq,
                     const float* dist_sq, const float* commit, int64_t A, int64_t N, int64_t D,
                     bool rotation, float* grad) {
  const bool wide = RVQ_HAVE_AVX512_CLONE && use_avx512();
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
    if (wide)
      grad_rows_avx512(res, g, sqnorm, code_sq, dist_sq, commit, A, N, D, rotation, grad, n0, n1);
    else
      grad_rows_default(res, g, sqnorm, code_sq, dist_sq, commit, A, N, D, rotation, grad, n0, n1);
  });
}

}  // namespace cpu
}  // namespace rvqfast

#include "cpu/decode_ema.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

namespace rvqfast {
namespace cpu {

void rvq_decode(const int64_t* indices, int64_t N, int64_t Q, const float* codebooks, int64_t K,
                int64_t D, float* out) {
  at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      float* o = out + n * D;
      std::fill(o, o + D, 0.0f);
      for (int64_t q = 0; q < Q; ++q) {
        const int64_t i = indices[n * Q + q];
        if (i < 0) continue;
        const float* c = codebooks + (q * K + i) * D;
        for (int64_t d = 0; d < D; ++d) o[d] += c[d];
      }
    }
  });
}

void ema_stats(const float* x, const int64_t* indices, int64_t N, int64_t D, int64_t K,
               float* counts, float* sums) {
  std::fill(counts, counts + K, 0.0f);
  std::memset(sums, 0, sizeof(float) * K * D);
  for (int64_t n = 0; n < N; ++n)
    if (indices[n] >= 0) counts[indices[n]] += 1.0f;
  // Threads own disjoint column slices of `sums`: no per-thread K x D copies to reduce, no
  // atomics, and each sum sees the rows in order, so the result is bitwise independent of the
  // thread count. The column slice is at least 16 floats (one cache line).
  at::parallel_for(0, D, 16, [&](int64_t d0, int64_t d1) {
    for (int64_t n = 0; n < N; ++n) {
      const int64_t k = indices[n];
      if (k < 0) continue;
      const float* xr = x + n * D;
      float* sr = sums + k * D;
      for (int64_t d = d0; d < d1; ++d) sr[d] += xr[d];
    }
  });
}

}  // namespace cpu
}  // namespace rvqfast

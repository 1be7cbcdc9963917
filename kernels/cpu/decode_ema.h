// Residual decoding (gather + sum) and the fused EMA statistics pass, on raw buffers.
#pragma once

#include <cstdint>

namespace rvqfast {
namespace cpu {

// out (N x D) = sum over q < Q of codebooks[q][indices[n*Q + q]]; index -1 contributes nothing.
// codebooks is (Q x K x D) row-major.
void rvq_decode(const int64_t* indices, int64_t N, int64_t Q, const float* codebooks, int64_t K,
                int64_t D, float* out);

// counts (K) and sums (K x D) of the rows assigned to each code; rows with index -1 are skipped.
// Deterministic: every sum is accumulated in row order whatever the thread count.
void ema_stats(const float* x, const int64_t* indices, int64_t N, int64_t D, int64_t K,
               float* counts, float* sums);

}  // namespace cpu
}  // namespace rvqfast

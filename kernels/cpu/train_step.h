// Per-stage row work of an RVQ training step outside the search: the residual update with the
// EMA statistics of the stage, and the fused gradient of all stages (Euclidean codebooks).
#pragma once

#include <cstdint>

namespace rvqfast {
namespace cpu {

// out[n] = r[n] - codebook[idx[n]] (one fp32 subtraction per element, as torch.sub); every idx
// must be in [0, K). With counts and sums not null also counts (K) and sums (K x D) of the rows r
// per code, exactly as ema_stats computes them (row order per column, thread-count independent),
// in the same pass. out must not overlap r.
void residual_update(const float* r, const float* codebook, const int64_t* idx, int64_t N,
                     int64_t D, int64_t K, float* out, float* counts, float* sums);

// Gradient with respect to the input of A Euclidean stages (grad.py, "_backward_euclidean";
// the pure-torch definition is rvqfast.backends.reference.rvq_stages_grad):
//   grad[n] = S_n g[n] + sum_{j=0..A} gamma_{j,n} res[j][n]
// res (A+1, N, D) are the stage inputs r_0..r_A, g (N, D) the upstream gradient, sqnorm (A+1, N)
// = |r_j|^2, code_sq (A, N) = |c_q|^2, dist_sq (A, N) = |r_q - c_q|^2, commit (A) the commitment
// loss coefficients (added to gamma_{q+1}). rotation: the rotation trick's S and gamma (which
// need the dots r_j . g); else straight-through, S = A. One pass over the rows: each row's A+1
// residual rows are read from memory once.
void rvq_stages_grad(const float* res, const float* g, const float* sqnorm, const float* code_sq,
                     const float* dist_sq, const float* commit, int64_t A, int64_t N, int64_t D,
                     bool rotation, float* grad);

}  // namespace cpu
}  // namespace rvqfast

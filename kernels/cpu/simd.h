// Vector primitives used by the CPU search kernels, on raw pointers.
//
// Each primitive has a portable scalar version and an AVX-512 version compiled with a function
// target attribute; the right one is picked once at run time (`__builtin_cpu_supports`), so the
// baseline compile flags stay portable across x86-64 machines (and non-x86 builds use scalar).
#pragma once

#include <cstdint>

namespace rvqfast {
namespace cpu {

// Running arg-min over one chunk of codes: s_k = cn[k] - 2 * dot[k] for k in [0, n); the chunk's
// codes are numbered base + k. Updates (best, best_idx) only on a strictly smaller value, so exact
// ties keep the lowest index (chunks must be visited in increasing code order).
void argmin_update_f32(const float* dot, const float* cn, int64_t n, int64_t base, float& best,
                       int64_t& best_idx);

// Same, with `dot` stored as bfloat16 bit patterns (the output of a bf16 GEMM).
void argmin_update_bf16(const uint16_t* dot, const float* cn, int64_t n, int64_t base,
                        float& best, int64_t& best_idx);

// Certified screening, pass 1: min over k of s_k + E_k, with s_k = cn[k] - 2*dot[k] (dot in
// bf16 bits) and the error bound E_k = row_norm * alpha_b[k] + beta_b2[k] + row_const.
// Returns +inf for n == 0; NaN if any term is NaN (callers treat a non-finite result as overflow).
float screen_min_bf16(const uint16_t* dot, const float* cn, const float* alpha_b,
                      const float* beta_b2, float row_norm, float row_const, int64_t n);

// Certified screening, pass 2: write (up to `cap`) the indices k with s_k - E_k <= m (or where
// that comparison is unordered, i.e. NaN) in increasing order into `out`; return how many codes
// qualified in total (may exceed `cap`, in which case the row overflows).
int64_t screen_collect_bf16(const uint16_t* dot, const float* cn, const float* alpha_b,
                            const float* beta_b2, float row_norm, float row_const, float m,
                            int64_t n, int64_t* out, int64_t cap);

// Squared Euclidean distance ||a - b||^2 accumulated in double (used for re-ranking and for
// recomputing the winner's distance without cancellation).
double sqdist_f64(const float* a, const float* b, int64_t d);

// Which implementation the dispatcher picked ("avx512" or "scalar").
const char* simd_level();

// Test hook: allow (true) or forbid (false) the AVX-512 versions; returns whether AVX-512 is now
// used. Not thread-safe: call it only while no kernel runs.
bool set_simd_avx512(bool allow);

}  // namespace cpu
}  // namespace rvqfast

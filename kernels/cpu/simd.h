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

// Certified screening. dot holds the bf16 GEMM output; the screened distance is
// s_k = cn[k] - 2*dot[k] and its error bound (docs/certified.md) is
//   E_k = cu*|dot[k]| + ea*p[k] + abar*q[k] + w[k] + rc
// with per-code coefficients (p, q, w) and per-row scalars (ea, abar, rc). All inputs are
// rounded up by the caller; every term is non-negative.
struct ScreenRow {
  float cu, ea, abar, rc;
};

// One pass over the codes: writes lo[k] = s_k - E_k and returns min over k of s_k + E_k
// (+inf for n == 0; NaN if any s_k + E_k is NaN: callers treat a non-finite result as overflow).
float screen_bounds_bf16(const uint16_t* dot, const float* cn, const float* p, const float* q,
                         const float* w, const ScreenRow& row, int64_t n, float* lo);

// Same for the int8 screen: dot holds the exact int32 products P_k of the quantized row and codes;
// the screened dot product is fl(fl(float(P_k) * row_scale) * code_scale[k]) and the rest is as
// above (docs/certified.md, "int8 screen").
float screen_bounds_i8(const int32_t* dot, float row_scale, const float* code_scale,
                       const float* cn, const float* p, const float* q, const float* w,
                       const ScreenRow& row, int64_t n, float* lo);

// Fused screen + selection: the codes k with lo_k = s_k - E_k <= m = min_j (s_j + E_j) (or where
// that comparison is unordered), in increasing order, go to idx (their index) and lov (lo_k);
// returns their count and stores m in *m (NaN if any s_k + E_k is NaN; the kept set is then
// incomplete and the caller must not use it). idx and lov need room for n + 16 entries. Same
// arithmetic, hence the same lo_k and m, as screen_bounds_bf16 / screen_bounds_i8.
int64_t screen_select_bf16(const uint16_t* dot, const float* cn, const float* p, const float* q,
                           const float* w, const ScreenRow& row, int64_t n, int32_t* idx,
                           float* lov, float* m);
int64_t screen_select_i8(const int32_t* dot, float row_scale, const float* code_scale,
                         const float* cn, const float* p, const float* q, const float* w,
                         const ScreenRow& row, int64_t n, int32_t* idx, float* lov, float* m);

// a = x - mu (fp32, one rounding per element; not stored when a is null). When a16 is not null
// also writes a16 = bf16(a) (round to nearest even) and norms = {||a||^2, ||bf16(a)||^2,
// ||a - bf16(a)||^2}. The norms are accumulated in fp32 (AVX-512) or fp64 (scalar); either way
// each is within gamma_d = d v / (1 - d v) relative error (v = 2^-24) plus d 2^-149 absolute
// (underflow) of the exact value, which is what callers must assume (norm_sq_upper in search.cpp).
void centre_row(const float* x, const float* mu, int64_t d, float* a, uint16_t* a16,
                double* norms);

// Per-row symmetric int8 quantization of a = x - mu (fp32, one rounding per element): scale =
// max_i |a_i| / 127 (0 for a zero row, or when that maximum is below 2^-100, so no reciprocal
// overflows), q_i = clamp(round(a_i * 127 / max|a|), -127, 127), stored in q[0..d); q[d..dp) are
// zeroed (padding). norms = {||a||^2, scale^2 * sum q_i^2, ||a - scale q||^2}: the first and last
// within gamma_{d+2} relative plus d 2^-149 absolute of the exact values (each error term
// a_i - scale q_i is one fused multiply-add, relative error v), the middle exact up to one fp64
// rounding (sum q_i^2 is an exact integer).
void quantize_row_i8(const float* x, const float* mu, int64_t d, int64_t dp, int8_t* q,
                     float* scale, double* norms);

// One fused pass of an RVQ stage's row update: dst = src - c, then centre_row(dst, mu, d, a, a16,
// norms) on the updated residual. src may equal dst (in place); otherwise they must not overlap.
void residual_step(const float* src, float* dst, const float* c, int64_t d, const float* mu,
                   float* a, uint16_t* a16, double* norms);

// dst = src - c (src may equal dst), then quantize_row_i8(dst, mu, ...).
void residual_step_i8(const float* src, float* dst, const float* c, int64_t d, const float* mu,
                      int64_t dp, int8_t* q, float* scale, double* norms);

// out = ((rows[0] + rows[1]) + rows[2]) + ... (n >= 1 rows of d floats, summed left to right in
// fp32, the order a running per-stage accumulation would use).
void sum_rows(float* out, const float* const* rows, int64_t n, int64_t d);

// acc += c elementwise (d floats; one fp32 addition each: a running sum_rows).
void add_row(float* acc, const float* c, int64_t d);

// Squared Euclidean distance ||a - b||^2 accumulated in double (used for re-ranking and for
// recomputing the winner's distance without cancellation).
double sqdist_f64(const float* a, const float* b, int64_t d);

// The same distance accumulated in fp32 (cheap re-rank pre-check). The caller must bound its
// error: each difference rounds once and the d squares are summed in some fp32 order, so the
// result is within (gamma_d + 3 v) relative plus d 2^-148 absolute of the exact value (v = 2^-24).
float sqdist_f32(const float* a, const float* b, int64_t d);

// Which implementation the dispatcher picked ("avx512" or "scalar").
const char* simd_level();

// Test hook: allow (true) or forbid (false) the AVX-512 versions; returns whether AVX-512 is now
// used. Not thread-safe: call it only while no kernel runs.
bool set_simd_avx512(bool allow);

}  // namespace cpu
}  // namespace rvqfast

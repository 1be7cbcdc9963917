// Nearest-code search and residual encoding on raw fp32 buffers (row-major, contiguous).
//
// Exact and bf16 modes process rows in bounded blocks. Per block and stage: one multi-threaded
// GEMM of the centred rows against the centred codes, then one at::parallel_for epilogue that
// fuses the arg-min (exact) or the certified screen + re-rank, the residual update and the
// centring (and bf16 rounding) of the rows for the next stage. The certified int8 mode is tiled
// instead: each thread takes L2-sized row tiles and runs every stage on them (single-threaded
// int8 GEMM of the tile, fused screen + selection, re-rank, residual update). No N x K matrix is
// ever allocated.
#pragma once

#include <cstdint>
#include <vector>

namespace rvqfast {
namespace cpu {

// kCertified screens with bf16, kCertifiedInt8 with int8 (both return exact answers);
// kBf16 is the bf16 screen alone (approximate).
enum class Precision { kExact, kCertified, kCertifiedInt8, kBf16 };

// Largest dimension the int8 screen accepts: int32 sums of D products of +-127 (and oneDNN's
// +128 compensation, 255 * 127 per term) must not wrap.
constexpr int64_t kMaxInt8Dim = 32768;

// Int8 rows are padded with zeros to a multiple of 4 bytes (see gemm_nt_s8).
inline int64_t int8_stride(int64_t D) { return (D + 3) / 4 * 4; }

// One codebook with everything the search needs precomputed once per call.
struct PreparedCodebook {
  int64_t K = 0, D = 0;
  const float* raw = nullptr;     // K x D, the caller's codes (not owned)
  std::vector<float> mu;          // D: codebook mean (centring avoids fp32 cancellation)
  std::vector<float> cc;          // K x D: codes - mu
  std::vector<float> cn;          // K: ||codes - mu||^2 (accumulated in fp64)
  std::vector<int64_t> canon;     // K: lowest index of a bitwise-equal-valued code (tie rule)
  Precision screen = Precision::kExact;  // which screen the fields below were prepared for
  // bf16 screening only:
  std::vector<uint16_t> cc_bf16;  // K x D: bf16(codes - mu), round to nearest even
  // int8 screening only:
  int64_t dp = 0;                 // int8_stride(D)
  std::vector<int8_t> cc_i8;      // K x dp: per-code symmetric int8 quantization of codes - mu
  std::vector<float> cs;          // K: the codes' quantization scales
  std::vector<int8_t> cc_vnni;    // cc_i8 packed for gemm_s8_vnni (empty where unsupported)
  std::vector<int32_t> bsum_vnni; // its compensation per code
  std::vector<float> cn_screen;   // K: cn, or +inf for a duplicate of a lower-indexed code (its
                                  // distance equals its canonical copy's: screening it only adds
                                  // tied candidates)
  // Per-code coefficients of the screening error bound, rounded up (docs/certified.md). With b~
  // the code's bf16 rounding or dequantized int8 quantization, a~ the row's:
  std::vector<float> sp;          // K: f * 2 ||b_k||                (times the row's ||a - a~||)
  std::vector<float> sq;          // K: f * 2 (||b_k - b~_k|| + g ||b~_k||)  (times ||a~||; g = 0
                                  //    for int8, whose integer products are exact)
  std::vector<float> sw;          // K: f * 7 v ||b_k||^2
  double bmax = 0;                // max_k ||c_k - mu||
};

// `p` says which screen to prepare for (kExact: none; kCertified / kBf16: bf16; kCertifiedInt8:
// int8).
PreparedCodebook prepare_codebook(const float* codes, int64_t K, int64_t D, Precision p);
// Same, into an existing object: its buffers are reused (no new pages touched when the shapes
// repeat, which matters for repeated calls).
void prepare_codebook_into(PreparedCodebook& cb, const float* codes, int64_t K, int64_t D,
                           Precision p);

// indices (N), sqdist (N, direct ||x - c||^2; may be null).
void nearest_code(const float* x, int64_t N, const PreparedCodebook& cb, Precision p,
                  int64_t* indices, float* sqdist);

// indices (N x Q) row-major, quantized (N x D) = sum of the chosen codes.
void rvq_encode(const float* x, int64_t N, const std::vector<PreparedCodebook>& cbs, Precision p,
                int64_t* indices, float* quantized);

// Test hook: the screen's interval [lo, hi] = [s_k - E_k, s_k + E_k] (N x K each) for every
// row and code, where s_k estimates T_k = ||x - c_k||^2 - ||x - mu||^2 and E_k is its rigorous
// error bound (docs/certified.md). p must be kCertified or kCertifiedInt8; duplicated codes
// (not the lowest index of their value) are not screened: lo = hi = +inf.
void screen_bounds(const float* x, int64_t N, const PreparedCodebook& cb, Precision p, float* lo,
                   float* hi);

// Certified-mode statistics, accumulated over calls until reset.
struct CertifiedStats {
  int64_t rows = 0;            // row searches screened in certified mode
  int64_t overflow_rows = 0;   // of which kept more candidates than the cap (re-ranked in place)
  int64_t candidates = 0;      // sum of candidate counts (capped at K) over screened rows
  int64_t max_candidates = 0;  // largest candidate count (capped at K) of one row
};
CertifiedStats certified_stats();
void reset_certified_stats();

// Candidate cap per row for certified mode; 0 = automatic (max(16, K / 16)). Rows over the cap are
// counted as overflow rows; their candidates are re-ranked like any others (fp64 beyond 32).
void set_candidate_cap(int64_t cap);
int64_t candidate_cap(int64_t K);

}  // namespace cpu
}  // namespace rvqfast

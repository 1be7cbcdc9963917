#include "cpu/search.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <numeric>

#include "cpu/gemm.h"
#include "cpu/gemm_vnni.h"
#include "cpu/profile.h"
#include "cpu/simd.h"

namespace rvqfast {
namespace cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::atomic<int64_t> g_rows{0}, g_overflow{0}, g_cands{0}, g_max_cands{0};
std::atomic<int64_t> g_cap{0};


// Smallest float >= v (for bounds that must not be rounded down).
inline float round_up(double v) {
  float f = static_cast<float>(v);
  return static_cast<double>(f) < v ? std::nextafter(f, kInf) : f;
}

// Rows per block (exact and bf16 paths; the int8 path is tiled, encode_tiled_i8). The GEMM of a
// block runs on all threads (BLAS / oneDNN threading) and the fused epilogue is split over rows
// with at::parallel_for; small blocks pay one fork/join each, so blocks are large but bounded: at
// most 16 MiB of dot products whatever N is.
int64_t block_rows(int64_t K, int64_t D, Precision p) {
  (void)D;
  if (p == Precision::kExact) return 4096;  // x min(K, 1024) fp32 dots (16 MiB)
  // Screened modes keep the whole block x K screen (2 bytes each for bf16, 4 for int32).
  const int64_t dots = p == Precision::kCertifiedInt8 ? int64_t{1} << 22 : int64_t{1} << 23;
  return std::clamp<int64_t>(dots / std::max<int64_t>(K, 1), 16, 4096);
}

constexpr int64_t kCodeChunk = 1024;  // exact mode: codes per GEMM call
constexpr double kU = 1.0 / 256, kV = 1.0 / (1 << 24);  // bf16 and fp32 unit roundoffs
constexpr double kF = 1 + 1.0 / 1024;  // covers the fp32 evaluation of the bound itself

inline bool is_screened(Precision p) { return p != Precision::kExact; }
inline bool is_int8(Precision p) { return p == Precision::kCertifiedInt8; }

// Relative error factor of the screen's dot product d_k besides the inputs' rounding, times 2
// (d_k enters s_k twice), plus the final fp32 rounding of cn_k - 2 d_k (2v |d_k|).
//   bf16: the GEMM rounds its fp32 sum to bf16 (u / (1 - u)).
//   int8: d_k = fl(fl(float(P_k) * s_a) * s_k): three roundings of an exact integer product,
//         gamma_3 / (1 - gamma_3) < 3.0001 v relative to the computed |d_k|.
inline float screen_cu(Precision p) {
  const double rel = is_int8(p) ? 3.0001 * kV : kU / (1 - kU);
  return round_up(kF * (2 * rel + 2 * kV));
}

// Upper bound on the norm of a vector of length d from the squared norm centre_row reports (fp32
// or fp64 accumulation: within gamma_d relative plus d 2^-149 absolute, simd.h). The 1 + 1e-6
// factor covers the fp64 evaluation of this expression and the final rounding to fp32 margin.
inline double norm_upper(double sq, int64_t d) {
  const double dv = static_cast<double>(d) * kV, g = dv / (1 - dv);
  return std::sqrt((sq + std::ldexp(static_cast<double>(d), -149)) / (1 - g)) * (1 + 1e-6);
}

// Re-rank of the kept candidates: picks the candidate with the smallest ||x - c_k||^2, ties to
// the lowest index. An fp32 pass decides when its rigorous error intervals separate one
// candidate from all others (the common case); otherwise the distances are recomputed in fp64.
// fp32: each difference rounds once and the squares are summed with at most d + 6 roundings per
// term (simd.h), so |s - S| <= eta S + alpha with eta = gamma_{d+6} + 3v, alpha = (d+6) 2^-149.
// Then S <= (s + alpha)(1 + 2 eta) and S >= (s - alpha)(1 - 2 eta) for eta <= 1/4, with ~eta of
// slack that absorbs the fp64 rounding of these expressions.
// known_k / known_s: one candidate whose fp32 distance is already computed (or known_k = -1).
int64_t rerank(const float* xr, const float* raw, int64_t D, const int32_t* cands, int64_t cnt,
               int64_t known_k = -1, float known_s = 0) {
  constexpr int64_t kMaxFast = 32;  // the int8 screen keeps ~6-10 candidates at D = 512
  const double n = static_cast<double>(D + 6), eta = n * kV / (1 - n * kV) + 3 * kV;
  if (cnt <= kMaxFast && eta <= 0.01) {
    const double alpha = std::ldexp(n, -149);
    float s[kMaxFast];
    int64_t jb = 0;
    bool ok = true;
    for (int64_t j = 0; j < cnt; ++j) {
      s[j] = cands[j] == known_k ? known_s : sqdist_f32(xr, raw + cands[j] * D, D);
      ok &= std::isfinite(s[j]);
      if (s[j] < s[jb]) jb = j;
    }
    if (ok) {
      const double hi = (static_cast<double>(s[jb]) + alpha) * (1 + 2 * eta);
      for (int64_t j = 0; ok && j < cnt; ++j)
        ok = j == jb || (static_cast<double>(s[j]) - alpha) * (1 - 2 * eta) > hi;
      if (ok) return cands[jb];
    }
  }
  double best = std::numeric_limits<double>::infinity();
  int64_t bi = cands[0];
  for (int64_t j = 0; j < cnt; ++j) {
    const int64_t k = cands[j];
    const double d = sqdist_f64(xr, raw + k * D, D);
    if (d < best) {  // candidates are in increasing order: ties keep the lowest index
      best = d;
      bi = k;
    }
  }
  return bi;
}

// Upper bound on T_k = ||x - c_k||^2 - ||x - mu||^2 for one code, from an fp32 distance (the
// rerank error model: |s - S| <= eta S + alpha) and the row's fp32-accumulated ||fl(x - mu)||^2
// (sq_a: within gamma_d relative plus d 2^-149 absolute; each fl(x_i - mu_i) within v relative of
// the exact difference, so ||x - mu||^2 >= (sq_a - d 2^-149) / ((1 + gamma_d)(1 + v)^2)). The
// fp64 evaluation is covered by a 1e-12 relative margin. Non-finite when any input is.
double t_upper(float s32, int64_t D, double sq_a) {
  const double n = static_cast<double>(D + 6), eta = n * kV / (1 - n * kV) + 3 * kV;
  const double alpha = std::ldexp(n, -149), dd = static_cast<double>(D);
  const double g = dd * kV / (1 - dd * kV);
  const double s_up = (static_cast<double>(s32) + alpha) * (1 + 2 * eta);
  const double p_lo = std::max(0.0, (sq_a - std::ldexp(dd, -149)) / ((1 + g) * (1 + kV) * (1 + kV)));
  return s_up - p_lo + 1e-12 * (s_up + p_lo);
}

// Narrow a row's kept candidates before the re-rank: with j the candidate of smallest lower bound
// and T_j <= t_upper(j), every k with lo_k > t_upper(j) has T_k >= lo_k > T_j and is not nearest.
// This halves the window the screen leaves (lo_k <= min_j hi_j compares two error bounds; this
// compares one), which matters for the int8 screen's wider bound. `lov` holds the candidates'
// lo_k. Returns the new count (candidates stay in increasing order); j and its fp32 distance go
// to (known_k, known_s) for the re-rank.
int64_t narrow_candidates(const float* xr, const PreparedCodebook& cb, double sq_a,
                          const float* lov, int32_t* cands, int64_t cnt, int64_t& known_k,
                          float& known_s) {
  int64_t jb = 0;
  for (int64_t j = 1; j < cnt; ++j)
    if (lov[j] < lov[jb]) jb = j;
  known_k = cands[jb];
  known_s = sqdist_f32(xr, cb.raw + known_k * cb.D, cb.D);
  const double tu = t_upper(known_s, cb.D, sq_a);
  if (!(tu < std::numeric_limits<double>::infinity())) return cnt;  // NaN / inf: keep all
  int64_t kept = 0;
  for (int64_t j = 0; j < cnt; ++j)
    if (j == jb || !(static_cast<double>(lov[j]) > tu)) cands[kept++] = cands[j];
  return kept;
}

// Candidate statistics of the rows one thread certified, added to the global counters once.
struct RowStats {
  int64_t rows = 0, overflow = 0, cands = 0, max = 0;
  void add(int64_t cnt, int64_t cap) {
    ++rows;
    cands += cnt;
    max = std::max(max, cnt);
    overflow += cnt > cap;
  }
  void flush() {
    g_rows += rows;
    g_overflow += overflow;
    g_cands += cands;
    for (int64_t prev = g_max_cands.load(); prev < max &&
                                            !g_max_cands.compare_exchange_weak(prev, max);) {
    }
    *this = RowStats();
  }
};

// Kept candidates of one row: code indices and their lower bounds lo_k (K + 16 entries: the
// selection stores 16 lanes at a time).
struct RowBuf {
  std::vector<int32_t> idx;
  std::vector<float> lov;
  int64_t count = 0;  // select_row's fallback: number of canonical codes in idx
  void size(int64_t K) {
    idx.resize(static_cast<size_t>(K + 16));
    lov.resize(static_cast<size_t>(K + 16));
  }
};

// Scratch buffers reused across the blocks and stages of one call.
struct Scratch {
  std::vector<float> a;         // block x D centred rows (fp32; exact mode only)
  std::vector<float> dots;      // block x chunk fp32 dot products (exact)
  std::vector<uint16_t> a16;    // block x D bf16 rows
  std::vector<uint16_t> s16;    // block x K bf16 dot products
  std::vector<int8_t> a8;       // block x dp int8 rows (int8 screen)
  std::vector<float> ascale;    // block: their quantization scales
  std::vector<int32_t> s32;     // block x ld int32 dot products (int8 screen)
  int64_t ld = 0;               // row stride of s32 (K, or K padded for the VNNI kernel)
  std::vector<double> norms;    // block x 3: ||a||^2, ||a~||^2, ||a - a~||^2 (a~: bf16 / int8)
  std::vector<float> best;
  std::vector<int64_t> bidx;
};

// Centre row r of `x` on `mu` into the scratch: the fp32 row for the exact GEMM, or only its
// bf16 / int8 copy and norms when screening (a screened row that overflows is re-centred from
// `x`).
inline void prep_row(const float* x, const float* mu, int64_t D, Precision p, Scratch& s,
                     int64_t r) {
  if (is_int8(p)) {
    const int64_t dp = int8_stride(D);
    quantize_row_i8(x, mu, D, dp, s.a8.data() + r * dp, s.ascale.data() + r,
                    s.norms.data() + 3 * r);
    return;
  }
  const bool bf16 = is_screened(p);
  centre_row(x, mu, D, bf16 ? nullptr : s.a.data() + r * D, bf16 ? s.a16.data() + r * D : nullptr,
             bf16 ? s.norms.data() + 3 * r : nullptr);
}

// The residual update of row r fused with its preparation for the next stage (prep_row).
inline void step_row(const float* src, float* dst, const float* c, int64_t D, const float* mu,
                     Precision p, Scratch& s, int64_t r) {
  if (is_int8(p)) {
    const int64_t dp = int8_stride(D);
    residual_step_i8(src, dst, c, D, mu, dp, s.a8.data() + r * dp, s.ascale.data() + r,
                     s.norms.data() + 3 * r);
    return;
  }
  const bool bf16 = is_screened(p);
  residual_step(src, dst, c, D, mu, bf16 ? nullptr : s.a.data() + r * D,
                bf16 ? s.a16.data() + r * D : nullptr, bf16 ? s.norms.data() + 3 * r : nullptr);
}

void prep_block(const float* x, const float* mu, int64_t n, int64_t D, Precision p, Scratch& s) {
  ProfileScope prof(Phase::kPrep);
  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) prep_row(x + r * D, mu, D, p, s, r);
  });
}

// Exact search of the n centred rows in `a`; `finish(r)` runs (inside the parallel epilogue)
// once out[r] is final.
template <class Finish>
void exact_block(const PreparedCodebook& cb, const float* a, int64_t n, Scratch& s, int64_t* out,
                 const Finish& finish) {
  const int64_t K = cb.K, D = cb.D, chunk = std::min(K, kCodeChunk);
  s.dots.resize(static_cast<size_t>(n * chunk));
  s.best.assign(static_cast<size_t>(n), kInf);
  s.bidx.assign(static_cast<size_t>(n), 0);
  for (int64_t k0 = 0; k0 < K; k0 += chunk) {
    const int64_t tk = std::min(chunk, K - k0);
    const bool last = k0 + tk >= K;
    gemm_nt_f32(n, tk, D, a, cb.cc.data() + k0 * D, s.dots.data());
    at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        argmin_update_f32(s.dots.data() + r * tk, cb.cn.data() + k0, tk, k0, s.best[r], s.bidx[r]);
        if (last) {
          out[r] = cb.canon[s.bidx[r]];
          finish(r);
        }
      }
    });
  }
}

// Per-row terms of the screening bound of row r of the prepared block (docs/certified.md), from
// its norms, inflated against their rounding and rounded up to fp32.
ScreenRow screen_row_terms(const PreparedCodebook& cb, Precision p, const Scratch& s, int64_t r) {
  const int64_t D = cb.D;
  const double Dd = static_cast<double>(D);
  const bool i8 = is_int8(p);
  // int8: each error term a_i - s q_i carries one more rounding (a fused multiply-add).
  const double* nr = s.norms.data() + 3 * r;
  const double A = norm_upper(nr[0], D), Abar = norm_upper(nr[1], D),
               Ea = norm_upper(nr[2], i8 ? D + 2 : D);
  // Underflow: bf16 GEMMs may flush denormals; the int8 screen's two scalings may underflow (at
  // most 2^-150 each, times 1 + s_k <= 1 + bmax per dot product).
  const double abs_slack = std::ldexp(Dd + std::sqrt(Dd) * (A + cb.bmax), -118) +
                           (i8 ? std::ldexp(1 + cb.bmax, -147) : 0.0);
  ScreenRow row;
  row.cu = screen_cu(p);
  row.ea = round_up(Ea);
  row.abar = round_up(Abar);
  row.rc = round_up(kF * (4.1 * kV * A * A + abs_slack));
  return row;
}

// Screen codes [k0, k0 + nk) for row r of the block whose GEMM output is in the scratch: writes
// s_k - E_k to lo, returns the minimum of s_k + E_k (screen_bounds_bf16 / _i8).
float screen_codes(const PreparedCodebook& cb, Precision p, const Scratch& s, int64_t r,
                   const ScreenRow& row, int64_t k0, int64_t nk, float* lo) {
  const int64_t K = cb.K;
  if (is_int8(p))
    return screen_bounds_i8(s.s32.data() + r * s.ld + k0, s.ascale[r], cb.cs.data() + k0,
                            cb.cn_screen.data() + k0, cb.sp.data() + k0, cb.sq.data() + k0,
                            cb.sw.data() + k0, row, nk, lo);
  return screen_bounds_bf16(s.s16.data() + r * K + k0, cb.cn_screen.data() + k0, cb.sp.data() + k0,
                            cb.sq.data() + k0, cb.sw.data() + k0, row, nk, lo);
}

// The int8 screen's GEMM of the n prepared rows in s.a8 into s.s32 (row stride s.ld): the
// hand-written VNNI kernel on the codebook packed at preparation where enabled, else oneDNN.
// Inside a parallel region (the tiled path) it runs on the calling thread.
void int8_gemm(const PreparedCodebook& cb, int64_t n, Scratch& s) {
  const int64_t K = cb.K;
  if (int8_gemm_vnni_enabled() && !cb.cc_vnni.empty()) {
    s.ld = vnni_padded_codes(K);
    s.s32.resize(static_cast<size_t>(vnni_padded_rows(n) * s.ld));
    const int64_t blocks = vnni_padded_rows(n) / vnni_padded_rows(1);
    at::parallel_for(0, blocks, 4, [&](int64_t b0, int64_t b1) {
      const int64_t r0 = b0 * vnni_padded_rows(1), r1 = std::min(n, b1 * vnni_padded_rows(1));
      gemm_s8_vnni(s.a8.data() + r0 * cb.dp, r1 - r0, cb.dp, cb.cc_vnni.data(),
                   cb.bsum_vnni.data(), K, s.s32.data() + r0 * s.ld, s.ld);
    });
    return;
  }
  s.ld = K;
  s.s32.resize(static_cast<size_t>(n * K));
  gemm_nt_s8(n, K, cb.dp, s.a8.data(), cb.cc_i8.data(), s.s32.data());
}

// The screen's GEMM for the n prepared rows of the block.
void screen_gemm(const PreparedCodebook& cb, Precision p, int64_t n, Scratch& s) {
  ProfileScope prof(Phase::kGemm);
  const int64_t K = cb.K;
  if (is_int8(p)) {
    int8_gemm(cb, n, s);
  } else {
    s.s16.resize(static_cast<size_t>(n * K));
    gemm_nt_bf16(n, K, cb.D, s.a16.data(), cb.cc_bf16.data(), s.s16.data());
  }
}

// The screen and selection of certify_row (below): fills buf with row r's kept candidates (their
// indices and lower bounds) and returns their count; -1 when the screen is not usable (a
// non-finite bound), in which case buf holds every canonical code.
int64_t select_row(const PreparedCodebook& cb, Precision p, const Scratch& s, int64_t r,
                   int64_t cap, RowBuf& buf, RowStats& st) {
  const int64_t K = cb.K;
  const ScreenRow row = screen_row_terms(cb, p, s, r);
  int32_t* cands = buf.idx.data();
  float m;
  int64_t cnt = is_int8(p) ? screen_select_i8(s.s32.data() + r * s.ld, s.ascale[r], cb.cs.data(),
                                              cb.cn_screen.data(), cb.sp.data(), cb.sq.data(),
                                              cb.sw.data(), row, K, cands, buf.lov.data(), &m)
                           : screen_select_bf16(s.s16.data() + r * K, cb.cn_screen.data(),
                                                cb.sp.data(), cb.sq.data(), cb.sw.data(), row, K,
                                                cands, buf.lov.data(), &m);
  if (std::isfinite(m) && std::isfinite(row.ea) && std::isfinite(row.abar) &&
      std::isfinite(row.rc) && cnt > 0) {
    st.add(cnt, cap);
    return cnt;
  }
  cnt = 0;
  for (int64_t k = 0; k < K; ++k)
    if (cb.canon[k] == k) cands[cnt++] = static_cast<int32_t>(k);
  st.add(K, cap);
  buf.count = cnt;
  return -1;
}

// The rest of certify_row: narrowing and re-rank of the candidates select_row kept.
int64_t decide_row(const PreparedCodebook& cb, const Scratch& s, int64_t r, const float* xr,
                   int64_t cnt, RowBuf& buf) {
  int32_t* cands = buf.idx.data();
  if (cnt < 0) {  // no usable screen: fp64 re-rank of every canonical code
    const int64_t all = buf.count;
    return all == 1 ? cands[0] : rerank(xr, cb.raw, cb.D, cands, all);
  }
  // A single kept code is a nearest code (the kept set holds every nearest code): no re-rank.
  if (cnt == 1) return cands[0];
  int64_t known_k = -1;
  float known_s = 0;
  const int64_t kept =
      narrow_candidates(xr, cb, s.norms[3 * r], buf.lov.data(), cands, cnt, known_k, known_s);
  return kept == 1 ? cands[0] : rerank(xr, cb.raw, cb.D, cands, kept, known_k, known_s);
}

// Certified choice for row r of the screened scratch (GEMM output and row norms in `s`, the row
// itself in xr): screen and select, narrow, re-rank. Returns the nearest code's index (the
// lowest index among equal codes is applied by the caller through cb.canon). A row whose screen is
// not finite keeps every canonical code; a row with more candidates than `cap` counts as an
// overflow row. Either way the re-rank is rigorous for any candidate count (fp32 intervals up to
// 32 candidates, else fp64), so no row needs a separate exact search.
int64_t certify_row(const PreparedCodebook& cb, Precision p, const Scratch& s, int64_t r,
                    const float* xr, int64_t cap, RowBuf& buf, RowStats& st) {
  return decide_row(cb, s, r, xr, select_row(cb, p, s, r, cap, buf, st), buf);
}

// Prefetch the code rows the re-rank of a row will read (at most 16 candidates), so their cache
// misses overlap the screen of the next row instead of stalling the re-rank.
void prefetch_candidates(const PreparedCodebook& cb, const RowBuf& buf, int64_t cnt) {
  if (cnt < 0) return;
  const int64_t bytes = cb.D * static_cast<int64_t>(sizeof(float));
  for (int64_t j = 0; j < std::min<int64_t>(cnt, 16); ++j) {
    const char* row = reinterpret_cast<const char*>(cb.raw + buf.idx[j] * cb.D);
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(row + off, 0, 3);
  }
}

// bf16 or int8 screen of a block whose rows were prepared with bf16 / int8 copies and norms
// (prep_row). kBf16 takes the screened arg-min; the certified modes keep every code the error
// bound cannot exclude and re-rank those by their exact distance to the uncentred row `x`
// (certify_row). finish(r) runs once out[r] is final.
template <class Finish>
void screened_block(const PreparedCodebook& cb, const float* x, int64_t n, Precision p,
                    Scratch& s, int64_t* out, const Finish& finish) {
  const int64_t K = cb.K, D = cb.D;
  screen_gemm(cb, p, n, s);
  ProfileScope prof_epi(Phase::kEpilogue);
  if (p == Precision::kBf16) {
    at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float best = kInf;
        int64_t bi = 0;
        argmin_update_bf16(s.s16.data() + r * K, cb.cn_screen.data(), K, 0, best, bi);
        out[r] = cb.canon[bi];
        finish(r);
      }
    });
    return;
  }
  const int64_t cap = candidate_cap(K);
  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    RowBuf buf;
    buf.size(K);
    RowStats st;
    for (int64_t r = r0; r < r1; ++r) {
      out[r] = cb.canon[certify_row(cb, p, s, r, x + r * D, cap, buf, st)];
      finish(r);
    }
    st.flush();
  });
}

template <class Finish>
void search_block(const PreparedCodebook& cb, const float* x, int64_t n, Precision p, Scratch& s,
                  int64_t* out, const Finish& finish) {
  if (p == Precision::kExact)
    exact_block(cb, s.a.data(), n, s, out, finish);
  else
    screened_block(cb, x, n, p, s, out, finish);
}

// Per-thread buffers kept between calls: on this class of VM a first touch costs ~1.4 us per
// 4 KiB page (~2 ms per 6 MB buffer), a sizeable share of a call. Large ones are released.
struct Workspace {
  Scratch s;
  std::vector<float> res;
  std::vector<int64_t> idx;

  size_t bytes() const {
    return 4 * (s.a.capacity() + s.dots.capacity() + s.best.capacity() +
                res.capacity() + s.ascale.capacity() + s.s32.capacity()) +
           2 * (s.a16.capacity() + s.s16.capacity()) + s.a8.capacity() +
           8 * (s.norms.capacity() + s.bidx.capacity() +
                idx.capacity());
  }
};

constexpr size_t kKeepBytes = size_t{64} << 20;

// The calling thread's workspace for one call; freed on scope exit when it grew beyond
// kKeepBytes (or when the call threw).
struct WorkspaceLease {
  Workspace& w;
  WorkspaceLease() : w(tls_workspace()) {}
  ~WorkspaceLease() {
    if (w.bytes() > kKeepBytes || std::uncaught_exceptions() > 0) w = Workspace();
  }
  static Workspace& tls_workspace() {
    thread_local Workspace ws;
    return ws;
  }
};

void size_scratch(Scratch& s, int64_t bm, int64_t D, Precision p) {
  if (p == Precision::kExact) {
    s.a.resize(static_cast<size_t>(bm * D));
  } else if (is_int8(p)) {
    s.a8.resize(static_cast<size_t>(bm * int8_stride(D)));
    s.ascale.resize(static_cast<size_t>(bm));
    s.norms.resize(static_cast<size_t>(3 * bm));
  } else {
    s.a16.resize(static_cast<size_t>(bm * D));
    s.norms.resize(static_cast<size_t>(3 * bm));
  }
}

// Rows per tile of the int8 path. A tile's int32 screen (rows x K) stays in L2 (120 x 512 x 4 B
// = 240 KiB of a 1 MiB Zen 4 L2, beside the tile's residuals) between the GEMM that writes it and
// the epilogue that reads it. Measured at K = D = 512 (1 thread, alternating in one process):
// 84 to 128 rows within 2% of each other, 64 rows 8% slower.
int64_t int8_tile_rows(int64_t K) {
  // Benchmarking override (read per call so one process can alternate): 0 = the block path.
  if (const char* e = std::getenv("RVQFAST_INT8_TILE_ROWS")) return std::max<int64_t>(0, std::atoll(e));
  const int64_t rows = std::clamp<int64_t>((int64_t{1} << 16) / std::max<int64_t>(K, 1), 16, 256);
  // The VNNI kernel computes whole micro-tiles of rows: no padding rows in a full tile.
  const int64_t mr = vnni_padded_rows(1);
  return int8_gemm_vnni_enabled() ? std::max(mr, rows / mr * mr) : rows;
}

// Per-thread buffers of the tiled int8 path (see Workspace for why they persist).
struct TileWorkspace {
  Scratch s;
  std::vector<float> res;
  RowBuf buf[2];
  static TileWorkspace& get() {
    thread_local TileWorkspace w;
    return w;
  }
};

// The certified int8 search, tiled: every thread takes tiles of rows from a shared counter and
// runs all Q stages on its tile (quantize, single-threaded int8 GEMM of the tile, screen, select,
// re-rank, residual update), so there is no fork/join per stage, no serial phase between the
// GEMM and its epilogue, the int32 screen is read from L2, and threads slowed by other jobs on
// the machine simply take fewer tiles. Writes indices (N x Q) and, when quantized is not null,
// the sum of the chosen codes; with sqdist (Q = 1 only) the winner's fp64 distance.
void encode_tiled_i8(const float* x, int64_t N, const PreparedCodebook* cbs, int64_t Q,
                     int64_t tile, int64_t* indices, float* quantized, float* sqdist) {
  const int64_t K = cbs[0].K, D = cbs[0].D, dp = int8_stride(D);
  const int64_t nthreads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(),
                                                                 (N + 15) / 16));
  // Small N: shrink tiles so every thread gets work; the GEMM is still efficient at 16+ rows.
  tile = std::max<int64_t>(16, std::min(tile, (N + nthreads - 1) / nthreads));
  const int64_t ntiles = (N + tile - 1) / tile, cap = candidate_cap(K);
  std::atomic<int64_t> next{0};
  std::exception_ptr err;
  std::mutex err_mu;
  at::parallel_for(0, nthreads, 1, [&](int64_t, int64_t) {
    TileWorkspace& w = TileWorkspace::get();
    Scratch& s = w.s;
    try {
      s.a8.resize(static_cast<size_t>(tile * dp));
      s.ascale.resize(static_cast<size_t>(tile));
      s.norms.resize(static_cast<size_t>(3 * tile));
      s.s32.resize(static_cast<size_t>(vnni_padded_rows(tile) * vnni_padded_codes(K)));
      w.res.resize(static_cast<size_t>(tile * D));
      w.buf[0].size(K);
      w.buf[1].size(K);
      RowStats st;
      const bool prof = profile_on();
      for (int64_t t = next++; t < ntiles; t = next++) {
        const int64_t r0 = t * tile, n = std::min(tile, N - r0);
        const float* xt = x + r0 * D;
        for (int64_t r = 0; r < n; ++r)
          quantize_row_i8(xt + r * D, cbs[0].mu.data(), D, dp, s.a8.data() + r * dp,
                          s.ascale.data() + r, s.norms.data() + 3 * r);
        for (int64_t q = 0; q < Q; ++q) {
          const PreparedCodebook& cb = cbs[q];
          const float* cur = q == 0 ? xt : w.res.data();
          {
            ProfileScope pg(Phase::kGemm);
            int8_gemm(cb, n, s);
          }
          // Software pipeline: row r + 1 is screened (and its candidates' code rows prefetched)
          // before row r is re-ranked.
          int64_t cnt_next = select_row(cb, Precision::kCertifiedInt8, s, 0, cap, w.buf[0], st);
          prefetch_candidates(cb, w.buf[0], cnt_next);
          for (int64_t r = 0; r < n; ++r) {
            const uint64_t t0 = prof ? profile_now() : 0;
            const int64_t cnt = cnt_next;
            RowBuf& buf = w.buf[r & 1];
            if (r + 1 < n) {
              cnt_next = select_row(cb, Precision::kCertifiedInt8, s, r + 1, cap, w.buf[(r + 1) & 1], st);
              prefetch_candidates(cb, w.buf[(r + 1) & 1], cnt_next);
            }
            const int64_t bi = cb.canon[decide_row(cb, s, r, cur + r * D, cnt, buf)];
            const uint64_t t1 = prof ? profile_now() : 0;
            int64_t* ir = indices + (r0 + r) * Q;
            ir[q] = bi;
            // The output accumulates the chosen codes stage by stage, left to right (the same
            // fp32 sums as rvq_encode's block path), while each code row is still in cache.
            float* acc = quantized ? quantized + (r0 + r) * D : nullptr;
            if (q + 1 < Q) {
              residual_step_i8(cur + r * D, w.res.data() + r * D, cb.raw + bi * D, D,
                               cbs[q + 1].mu.data(), dp, s.a8.data() + r * dp,
                               s.ascale.data() + r, s.norms.data() + 3 * r);
            }
            if (acc) {
              if (q == 0)
                std::memcpy(acc, cb.raw + bi * D, static_cast<size_t>(D) * sizeof(float));
              else
                add_row(acc, cb.raw + bi * D, D);
            }
            if (sqdist)
              sqdist[r0 + r] = static_cast<float>(sqdist_f64(xt + r * D, cb.raw + bi * D, D));
            if (prof) {
              profile_add(Phase::kNarrow, t1 - t0);
              profile_add(Phase::kFinish, profile_now() - t1);
            }
          }
        }
      }
      st.flush();
    } catch (...) {
      std::lock_guard<std::mutex> lock(err_mu);
      if (!err) err = std::current_exception();
      next = ntiles;  // stop the other threads early
    }
  });
  if (err) std::rethrow_exception(err);
}

}  // namespace

PreparedCodebook prepare_codebook(const float* codes, int64_t K, int64_t D, Precision p) {
  PreparedCodebook cb;
  prepare_codebook_into(cb, codes, K, D, p);
  return cb;
}

void prepare_codebook_into(PreparedCodebook& cb, const float* codes, int64_t K, int64_t D,
                           Precision p) {
  cb.screen = p == Precision::kBf16 ? Precision::kCertified : p;
  cb.K = K;
  cb.D = D;
  cb.raw = codes;
  cb.bmax = 0;
  std::vector<double> mu(static_cast<size_t>(D), 0.0);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t d = 0; d < D; ++d) mu[d] += codes[k * D + d];
  cb.mu.resize(static_cast<size_t>(D));
  for (int64_t d = 0; d < D; ++d) cb.mu[d] = static_cast<float>(mu[d] / static_cast<double>(K));
  cb.cc.resize(static_cast<size_t>(K * D));
  cb.cn.resize(static_cast<size_t>(K));
  const std::vector<float> zero(static_cast<size_t>(D), 0.0f);
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t d = 0; d < D; ++d) cb.cc[k * D + d] = codes[k * D + d] - cb.mu[d];
    // fp64 accumulation (vectorised): every square is exact, the sum's error is far below the
    // final fp32 rounding.
    cb.cn[k] = static_cast<float>(sqdist_f64(cb.cc.data() + k * D, zero.data(), D));
  }
  // Duplicated codes: map every code to the lowest index holding the same values, so exact ties
  // between duplicates resolve to the lowest index whatever order the GEMM summed in.
  std::vector<int64_t> order(static_cast<size_t>(K));
  std::iota(order.begin(), order.end(), 0);
  auto row_less = [&](int64_t i, int64_t j) {
    const float *a = codes + i * D, *b = codes + j * D;
    for (int64_t d = 0; d < D; ++d)
      if (a[d] != b[d]) return a[d] < b[d];
    return i < j;
  };
  std::sort(order.begin(), order.end(), row_less);
  cb.canon.resize(static_cast<size_t>(K));
  for (int64_t i = 0; i < K; ++i) {
    const int64_t k = order[i];
    const bool same_as_prev =
        i > 0 && std::equal(codes + k * D, codes + (k + 1) * D, codes + order[i - 1] * D);
    cb.canon[k] = same_as_prev ? cb.canon[order[i - 1]] : k;
  }
  if (is_screened(p)) {
    // Per-code coefficients of the screening bound; derivation in docs/certified.md.
    const double Dd = static_cast<double>(D), g = Dd * kV / (1 - Dd * kV);
    const bool i8 = is_int8(p);
    cb.dp = int8_stride(D);
    if (i8) {
      cb.cc_i8.resize(static_cast<size_t>(K * cb.dp));
      cb.cs.resize(static_cast<size_t>(K));
    } else {
      cb.cc_bf16.resize(static_cast<size_t>(K * D));
    }
    cb.sp.resize(static_cast<size_t>(K));
    cb.sq.resize(static_cast<size_t>(K));
    cb.sw.resize(static_cast<size_t>(K));
    cb.cn_screen.resize(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) cb.cn_screen[k] = cb.canon[k] == k ? cb.cn[k] : kInf;
    for (int64_t k = 0; k < K; ++k) {
      double nb[3];  // ||b||^2, ||b~||^2, ||b - b~||^2 of the centred code b = c_k - mu
      if (i8)
        quantize_row_i8(cb.cc.data() + k * D, zero.data(), D, cb.dp, cb.cc_i8.data() + k * cb.dp,
                        cb.cs.data() + k, nb);
      else
        centre_row(cb.cc.data() + k * D, zero.data(), D, nullptr, cb.cc_bf16.data() + k * D, nb);
      const double b = norm_upper(nb[0], D), bbar = norm_upper(nb[1], D),
                   eb = norm_upper(nb[2], i8 ? D + 2 : D);
      cb.bmax = std::max(cb.bmax, b);
      cb.sp[k] = round_up(kF * 2 * b);
      cb.sq[k] = round_up(kF * 2 * (eb + (i8 ? 0.0 : g * bbar)));
      cb.sw[k] = round_up(kF * 7 * kV * b * b);
    }
    if (i8 && int8_gemm_vnni_supported())
      pack_codes_vnni(cb.cc_i8.data(), K, cb.dp, cb.cc_vnni, cb.bsum_vnni);
    else if (i8) {
      cb.cc_vnni.clear();
      cb.bsum_vnni.clear();
    }
  }
}

void nearest_code(const float* x, int64_t N, const PreparedCodebook& cb, Precision p,
                  int64_t* indices, float* sqdist) {
  if (is_int8(p) && int8_tile_rows(cb.K) > 0) {
    encode_tiled_i8(x, N, &cb, 1, int8_tile_rows(cb.K), indices, nullptr, sqdist);
    return;
  }
  const int64_t D = cb.D, bm = std::min(N, block_rows(cb.K, D, p));
  WorkspaceLease lease;
  Scratch& s = lease.w.s;
  size_scratch(s, bm, D, p);
  for (int64_t r0 = 0; r0 < N; r0 += bm) {
    const int64_t n = std::min(bm, N - r0);
    const float* xb = x + r0 * D;
    prep_block(xb, cb.mu.data(), n, D, p, s);
    search_block(cb, xb, n, p, s, indices + r0, [](int64_t) {});
  }
  if (sqdist)
    at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
      for (int64_t r = n0; r < n1; ++r)
        sqdist[r] = static_cast<float>(sqdist_f64(x + r * D, cb.raw + indices[r] * D, D));
    });
}

void rvq_encode(const float* x, int64_t N, const std::vector<PreparedCodebook>& cbs, Precision p,
                int64_t* indices, float* quantized) {
  const int64_t Q = static_cast<int64_t>(cbs.size()), D = cbs[0].D;
  if (is_int8(p) && int8_tile_rows(cbs[0].K) > 0) {
    encode_tiled_i8(x, N, cbs.data(), Q, int8_tile_rows(cbs[0].K), indices, quantized, nullptr);
    return;
  }
  int64_t bm = N;
  for (const auto& cb : cbs) bm = std::min(bm, block_rows(cb.K, D, p));
  const int64_t nblocks = (N + bm - 1) / bm;
  bm = (N + nblocks - 1) / nblocks;  // equal blocks: no small, poorly threaded tail block
  WorkspaceLease lease;
  Scratch& s = lease.w.s;
  size_scratch(s, bm, D, p);
  std::vector<float>& res = lease.w.res;
  std::vector<int64_t>& idx = lease.w.idx;
  res.resize(static_cast<size_t>(bm * D));
  idx.resize(static_cast<size_t>(bm));
  for (int64_t r0 = 0; r0 < N; r0 += bm) {
    const int64_t n = std::min(bm, N - r0);
    // Stage 0 reads the input rows directly; its residual step writes the first residual into
    // the block buffer, where it stays through the later stages (no copy of x).
    float* qb = quantized + r0 * D;
    prep_block(x + r0 * D, cbs[0].mu.data(), n, D, p, s);
    for (int64_t q = 0; q < Q; ++q) {
      const PreparedCodebook& cb = cbs[q];
      const float* cur = q == 0 ? x + r0 * D : res.data();
      const float* next_mu = q + 1 < Q ? cbs[q + 1].mu.data() : nullptr;
      // Runs in the search's parallel epilogue as soon as row r's code is final: the residual
      // update fused with the row's centring for the next stage (saves a pass and a fork/join).
      // The output is written once, after the last stage, as the left-to-right sum of the chosen
      // codes (the same fp32 sums a running per-stage accumulation gives, in fewer passes).
      auto finish = [&](int64_t r) {
        int64_t* ir = indices + (r0 + r) * Q;
        ir[q] = idx[r];
        if (next_mu) {
          step_row(cur + r * D, res.data() + r * D, cb.raw + idx[r] * D, D, next_mu, p, s, r);
          return;
        }
        constexpr int64_t kStack = 64;
        const float* stack_rows[kStack];
        std::vector<const float*> heap_rows;
        const float** rows = stack_rows;
        if (Q > kStack) {
          heap_rows.resize(static_cast<size_t>(Q));
          rows = heap_rows.data();
        }
        for (int64_t j = 0; j < Q; ++j) rows[j] = cbs[j].raw + ir[j] * D;
        sum_rows(qb + r * D, rows, Q, D);
      };
      search_block(cb, cur, n, p, s, idx.data(), finish);
    }
  }
}

void screen_bounds(const float* x, int64_t N, const PreparedCodebook& cb, Precision p, float* lo,
                   float* hi) {
  const int64_t K = cb.K, D = cb.D;
  Scratch s;
  size_scratch(s, N, D, p);
  prep_block(x, cb.mu.data(), N, D, p, s);
  screen_gemm(cb, p, N, s);
  for (int64_t r = 0; r < N; ++r) {
    const ScreenRow row = screen_row_terms(cb, p, s, r);
    screen_codes(cb, p, s, r, row, 0, K, lo + r * K);
    float unused;
    for (int64_t k = 0; k < K; ++k) hi[r * K + k] = screen_codes(cb, p, s, r, row, k, 1, &unused);
  }
}

CertifiedStats certified_stats() {
  CertifiedStats s;
  s.rows = g_rows.load();
  s.overflow_rows = g_overflow.load();
  s.candidates = g_cands.load();
  s.max_candidates = g_max_cands.load();
  return s;
}

void reset_certified_stats() {
  g_rows = 0;
  g_overflow = 0;
  g_cands = 0;
  g_max_cands = 0;
}

void set_candidate_cap(int64_t cap) { g_cap = std::max<int64_t>(cap, 0); }  // 0 = automatic

int64_t candidate_cap(int64_t K) {
  const int64_t c = g_cap.load();
  return c > 0 ? c : std::max<int64_t>(16, K / 16);
}

}  // namespace cpu
}  // namespace rvqfast

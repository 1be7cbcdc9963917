// Scalar and AVX-512 versions of the search primitives, with one-time run-time dispatch.
#include "cpu/simd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RVQ_X86 1
#else
#define RVQ_X86 0
#endif

namespace rvqfast {
namespace cpu {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// ----------------------------------------------------------------------------- scalar versions

inline float to_f32(float v) { return v; }
inline float to_f32(uint16_t b) { return bf16_to_f32(b); }

template <typename T>
void argmin_scalar(const T* dot, const float* cn, int64_t n, int64_t base, float& best,
                   int64_t& best_idx) {
  for (int64_t k = 0; k < n; ++k) {
    float s = cn[k] - 2.0f * to_f32(dot[k]);
    if (s < best) {
      best = s;
      best_idx = base + k;
    }
  }
}

void argmin_f32_scalar(const float* dot, const float* cn, int64_t n, int64_t base, float& best,
                       int64_t& best_idx) {
  argmin_scalar(dot, cn, n, base, best, best_idx);
}

void argmin_bf16_scalar(const uint16_t* dot, const float* cn, int64_t n, int64_t base,
                        float& best, int64_t& best_idx) {
  argmin_scalar(dot, cn, n, base, best, best_idx);
}

inline float screen_err(float d, const ScreenRow& row, float p, float q, float w) {
  return row.cu * std::fabs(d) + row.ea * p + row.abar * q + w + row.rc;
}

// Shared body of the scalar screens: dot(k) gives the screened dot product of code k.
template <class Dot>
float screen_bounds_generic(const Dot& dot, const float* cn, const float* p, const float* q,
                            const float* w, const ScreenRow& row, int64_t n, float* lo) {
  float m = kInf;
  bool nan = false;
  for (int64_t k = 0; k < n; ++k) {
    const float d = dot(k);
    const float s = cn[k] - 2.0f * d, e = screen_err(d, row, p[k], q[k], w[k]);
    const float t = s + e;
    lo[k] = s - e;
    nan |= std::isnan(t);
    m = t < m ? t : m;
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

float screen_bounds_scalar(const uint16_t* dot, const float* cn, const float* p,
                           const float* q, const float* w, const ScreenRow& row, int64_t n,
                           float* lo) {
  return screen_bounds_generic([&](int64_t k) { return bf16_to_f32(dot[k]); }, cn, p, q, w, row,
                               n, lo);
}

float screen_bounds_i8_scalar(const int32_t* dot, float rs, const float* cs, const float* cn,
                              const float* p, const float* q, const float* w,
                              const ScreenRow& row, int64_t n, float* lo) {
  return screen_bounds_generic(
      [&](int64_t k) { return (static_cast<float>(dot[k]) * rs) * cs[k]; }, cn, p, q, w, row, n,
      lo);
}

// Shared body of the scalar fused screens (screen_select_*): one pass for the minimum of
// s_k + E_k, a second (recomputing the same fp32 expressions) for the kept codes.
template <class Dot>
int64_t screen_select_generic(const Dot& dot, const float* cn, const float* p, const float* q,
                              const float* w, const ScreenRow& row, int64_t n, int32_t* idx,
                              float* lov, float* m_out) {
  float m = kInf;
  bool nan = false;
  for (int64_t k = 0; k < n; ++k) {
    const float d = dot(k), t = (cn[k] - 2.0f * d) + screen_err(d, row, p[k], q[k], w[k]);
    nan |= std::isnan(t);
    m = t < m ? t : m;
  }
  if (nan) m = std::numeric_limits<float>::quiet_NaN();
  *m_out = m;
  int64_t cnt = 0;
  for (int64_t k = 0; k < n; ++k) {
    const float d = dot(k), lo = (cn[k] - 2.0f * d) - screen_err(d, row, p[k], q[k], w[k]);
    if (!(lo > m)) {  // keeps NaN too: an unordered comparison must never drop a code
      idx[cnt] = static_cast<int32_t>(k);
      lov[cnt++] = lo;
    }
  }
  return cnt;
}

int64_t screen_select_bf16_scalar(const uint16_t* dot, const float* cn, const float* p,
                                  const float* q, const float* w, const ScreenRow& row, int64_t n,
                                  int32_t* idx, float* lov, float* m_out) {
  return screen_select_generic([&](int64_t k) { return bf16_to_f32(dot[k]); }, cn, p, q, w, row,
                               n, idx, lov, m_out);
}

int64_t screen_select_i8_scalar(const int32_t* dot, float rs, const float* cs, const float* cn,
                                const float* p, const float* q, const float* w,
                                const ScreenRow& row, int64_t n, int32_t* idx, float* lov,
                                float* m_out) {
  return screen_select_generic(
      [&](int64_t k) { return (static_cast<float>(dot[k]) * rs) * cs[k]; }, cn, p, q, w, row, n,
      idx, lov, m_out);
}

// Round-to-nearest-even fp32 -> bf16 on the bit pattern (inputs are finite or inf, never NaN:
// the ops reject NaN; an overflow to inf is caught by the callers' finiteness checks).
inline uint16_t f32_to_bf16_rne(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

void centre_row_scalar(const float* x, const float* mu, int64_t d, float* a, uint16_t* a16,
                       double* norms) {
  double n0 = 0, n1 = 0, n2 = 0;
  for (int64_t i = 0; i < d; ++i) {
    const float v = x[i] - mu[i];
    if (a) a[i] = v;
    if (a16) {
      const uint16_t h = f32_to_bf16_rne(v);
      a16[i] = h;
      const double vb = bf16_to_f32(h), dv = static_cast<double>(v) - vb;
      n0 += static_cast<double>(v) * v;
      n1 += vb * vb;
      n2 += dv * dv;
    }
  }
  if (a16) {
    norms[0] = n0;
    norms[1] = n1;
    norms[2] = n2;
  }
}

void residual_step_scalar(const float* src, float* dst, const float* c, int64_t d,
                          const float* mu, float* a, uint16_t* a16, double* norms) {
  for (int64_t i = 0; i < d; ++i) dst[i] = src[i] - c[i];
  centre_row_scalar(dst, mu, d, a, a16, norms);
}

// Scale and reciprocal of the int8 quantization of a row whose largest magnitude is amax. Zero,
// tiny (below 2^-100: the reciprocal could overflow) and non-finite rows get scale 0: all their
// codes are 0 and the whole row counts as quantization error (a non-finite one then forces the
// exact path through its non-finite norms).
inline void i8_scale(float amax, float& scale, float& inv) {
  if (amax >= 0x1p-100f && amax <= std::numeric_limits<float>::max()) {
    scale = amax / 127.0f;
    inv = 127.0f / amax;
  } else {
    scale = inv = 0.0f;
  }
}

inline float clamp127(float v) { return std::min(127.0f, std::max(-127.0f, v)); }

void quantize_row_i8_scalar(const float* x, const float* mu, int64_t d, int64_t dp, int8_t* q,
                            float* scale, double* norms) {
  float amax = 0, s, inv;
  for (int64_t i = 0; i < d; ++i) amax = std::max(amax, std::fabs(x[i] - mu[i]));
  i8_scale(amax, s, inv);
  double n0 = 0, n2 = 0;
  int64_t nq = 0;
  for (int64_t i = 0; i < d; ++i) {
    const float v = x[i] - mu[i];
    const int qi = static_cast<int>(clamp127(std::nearbyint(v * inv)));
    q[i] = static_cast<int8_t>(qi);
    const double e = static_cast<double>(v) - static_cast<double>(s) * qi;
    n0 += static_cast<double>(v) * v;
    n2 += e * e;
    nq += qi * qi;
  }
  for (int64_t i = d; i < dp; ++i) q[i] = 0;
  *scale = s;
  norms[0] = n0;
  norms[1] = static_cast<double>(s) * s * static_cast<double>(nq);
  norms[2] = n2;
}

void residual_step_i8_scalar(const float* src, float* dst, const float* c, int64_t d,
                             const float* mu, int64_t dp, int8_t* q, float* scale,
                             double* norms) {
  for (int64_t i = 0; i < d; ++i) dst[i] = src[i] - c[i];
  quantize_row_i8_scalar(dst, mu, d, dp, q, scale, norms);
}

float sqdist_f32_scalar(const float* a, const float* b, int64_t d) {
  float acc = 0;
  for (int64_t i = 0; i < d; ++i) {
    const float t = a[i] - b[i];
    acc += t * t;
  }
  return acc;
}

void sum_rows_scalar(float* out, const float* const* rows, int64_t n, int64_t d) {
  for (int64_t i = 0; i < d; ++i) {
    float acc = rows[0][i];
    for (int64_t j = 1; j < n; ++j) acc += rows[j][i];
    out[i] = acc;
  }
}

void add_row_scalar(float* acc, const float* c, int64_t d) {
  for (int64_t i = 0; i < d; ++i) acc[i] += c[i];
}

double sqdist_scalar(const float* a, const float* b, int64_t d) {
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= d; i += 4)
    for (int j = 0; j < 4; ++j) {
      double t = static_cast<double>(a[i + j]) - static_cast<double>(b[i + j]);
      acc[j] += t * t;
    }
  for (; i < d; ++i) {
    double t = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    acc[0] += t * t;
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// ---------------------------------------------------------------------------- AVX-512 versions
#if RVQ_X86
#define RVQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

RVQ_AVX512 inline __m512 load_bf16x16(const uint16_t* p, __mmask16 m) {
  __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Lanes k..k+left-1 of a 16-wide block (all 16 when at least 16 are left).
inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// Lane-wise running min with the lane's first index, then a reduction that keeps the lowest
// index among lanes holding the minimum: the same answer as the scalar strict-< scan.
struct LaneArgmin {
  __m512 vbest;
  __m512i vidx, cur;

  RVQ_AVX512 LaneArgmin()
      : vbest(_mm512_set1_ps(kInf)),
        vidx(_mm512_setzero_si512()),
        cur(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)) {}

  // Scores s of the next 16 codes, of which the lanes in `valid` exist.
  RVQ_AVX512 void step(__m512 s, __mmask16 valid) {
    __mmask16 lt = _mm512_mask_cmp_ps_mask(valid, s, vbest, _CMP_LT_OQ);
    vbest = _mm512_mask_mov_ps(vbest, lt, s);
    vidx = _mm512_mask_mov_epi32(vidx, lt, cur);
    cur = _mm512_add_epi32(cur, _mm512_set1_epi32(16));
  }

  RVQ_AVX512 void finish(int64_t base, float& best, int64_t& best_idx) const {
    float m = _mm512_reduce_min_ps(vbest);
    if (m < best) {
      __mmask16 eq = _mm512_cmp_ps_mask(vbest, _mm512_set1_ps(m), _CMP_EQ_OQ);
      int32_t k = _mm512_mask_reduce_min_epi32(eq, vidx);
      best = m;
      best_idx = base + k;
    }
  }
};

RVQ_AVX512 void argmin_f32_avx512(const float* dot, const float* cn, int64_t n, int64_t base,
                                  float& best, int64_t& best_idx) {
  const __m512 two = _mm512_set1_ps(2.0f);
  LaneArgmin lanes;
  int64_t k = 0;
  for (; k + 16 <= n; k += 16)
    lanes.step(_mm512_fnmadd_ps(two, _mm512_loadu_ps(dot + k), _mm512_loadu_ps(cn + k)), 0xFFFF);
  if (k < n) {
    __mmask16 tail = tail_mask(n - k);
    __m512 d = _mm512_maskz_loadu_ps(tail, dot + k);
    __m512 c = _mm512_mask_loadu_ps(_mm512_set1_ps(kInf), tail, cn + k);
    lanes.step(_mm512_fnmadd_ps(two, d, c), tail);
  }
  lanes.finish(base, best, best_idx);
}

RVQ_AVX512 void argmin_bf16_avx512(const uint16_t* dot, const float* cn, int64_t n, int64_t base,
                                   float& best, int64_t& best_idx) {
  const __m512 two = _mm512_set1_ps(2.0f);
  LaneArgmin lanes;
  for (int64_t k = 0; k < n; k += 16) {
    __mmask16 m = tail_mask(n - k);
    lanes.step(_mm512_fnmadd_ps(two, load_bf16x16(dot + k, m),
                                _mm512_mask_loadu_ps(_mm512_set1_ps(kInf), m, cn + k)),
               m);
  }
  lanes.finish(base, best, best_idx);
}

// The screen's per-row error-bound coefficients (ScreenRow), broadcast to 16 lanes.
struct ScreenVecs {
  __m512 cu, ea, ab, rc;

  RVQ_AVX512 explicit ScreenVecs(const ScreenRow& row)
      : cu(_mm512_set1_ps(row.cu)),
        ea(_mm512_set1_ps(row.ea)),
        ab(_mm512_set1_ps(row.abar)),
        rc(_mm512_set1_ps(row.rc)) {}
};

// Screened scores ‖c‖² − 2·d of 16 codes from their dot products d, and (in err) their error
// bounds.
RVQ_AVX512 inline __m512 screen_score16(__m512 d, const float* cn, const float* p,
                                        const float* q, const float* w, const ScreenVecs& v,
                                        __mmask16 m, __m512& err) {
  __m512 e = _mm512_fmadd_ps(v.ab, _mm512_maskz_loadu_ps(m, q), _mm512_add_ps(_mm512_maskz_loadu_ps(m, w), v.rc));
  e = _mm512_fmadd_ps(v.ea, _mm512_maskz_loadu_ps(m, p), e);
  err = _mm512_fmadd_ps(v.cu, _mm512_abs_ps(d), e);
  return _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), d, _mm512_maskz_loadu_ps(m, cn));
}

// Shared body of the AVX-512 screens: load(k, mask) gives the dot products of codes k..k+15.
template <class Load>
RVQ_AVX512 inline float screen_bounds_avx512_generic(const Load& load, const float* cn,
                                                     const float* p, const float* q,
                                                     const float* w, const ScreenRow& row,
                                                     int64_t n, float* lo) {
  const ScreenVecs v(row);
  __m512 vmin = _mm512_set1_ps(kInf);
  __mmask16 nan = 0;
  for (int64_t k = 0; k < n; k += 16) {
    __mmask16 m = tail_mask(n - k);
    __m512 e;
    __m512 s = screen_score16(load(k, m), cn + k, p + k, q + k, w + k, v, m, e);
    __m512 t = _mm512_add_ps(s, e);
    _mm512_mask_storeu_ps(lo + k, m, _mm512_sub_ps(s, e));
    nan |= _mm512_mask_cmp_ps_mask(m, t, t, _CMP_UNORD_Q);
    vmin = _mm512_mask_min_ps(vmin, m, vmin, t);
  }
  if (nan) return std::numeric_limits<float>::quiet_NaN();
  return _mm512_reduce_min_ps(vmin);
}

RVQ_AVX512 float screen_bounds_avx512(const uint16_t* dot, const float* cn, const float* p,
                                      const float* q, const float* w, const ScreenRow& row,
                                      int64_t n, float* lo) {
  return screen_bounds_avx512_generic(
      [&](int64_t k, __mmask16 m) RVQ_AVX512 { return load_bf16x16(dot + k, m); }, cn, p, q, w,
      row, n, lo);
}

RVQ_AVX512 float screen_bounds_i8_avx512(const int32_t* dot, float rs, const float* cs,
                                         const float* cn, const float* p, const float* q,
                                         const float* w, const ScreenRow& row, int64_t n,
                                         float* lo) {
  const __m512 vrs = _mm512_set1_ps(rs);
  return screen_bounds_avx512_generic(
      [&](int64_t k, __mmask16 m) RVQ_AVX512 {
        const __m512 pf = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, dot + k));
        return _mm512_mul_ps(_mm512_mul_ps(pf, vrs), _mm512_maskz_loadu_ps(m, cs + k));
      },
      cn, p, q, w, row, n, lo);
}

// Fused screen + selection in one pass. A code can only be kept if lo_k <= m = min_j hi_j, and
// the running minimum over the codes seen so far (this block included) is >= m, so comparing
// with it keeps a superset of the final set; the few codes kept early against a larger running
// minimum are dropped by a final pass over the kept ones. Branch-free: every block compacts its
// kept lanes in registers (vpcompressd to memory is microcoded and slow on Zen 4) and stores all
// 16 lanes, advancing by the kept count, so idx and lov need n + 16 entries. The only
// loop-carried dependencies are the lane-wise minimum and the count; the horizontal minimum that
// feeds each block's comparison is off those chains.
template <class Load>
RVQ_AVX512 inline int64_t screen_select_avx512_generic(const Load& load, const float* cn,
                                                       const float* p, const float* q,
                                                       const float* w, const ScreenRow& row,
                                                       int64_t n, int32_t* idx, float* lov,
                                                       float* m_out) {
  const ScreenVecs v(row);
  __m512 vmin0 = _mm512_set1_ps(kInf), vmin1 = _mm512_set1_ps(kInf);
  __mmask16 nan = 0;
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    __m512 e0, e1;
    const __m512 s0 = screen_score16(load(k, 0xFFFF), cn + k, p + k, q + k, w + k, v, 0xFFFF, e0);
    const __m512 s1 = screen_score16(load(k + 16, 0xFFFF), cn + k + 16, p + k + 16, q + k + 16,
                                     w + k + 16, v, 0xFFFF, e1);
    const __m512 t0 = _mm512_add_ps(s0, e0), t1 = _mm512_add_ps(s1, e1);
    _mm512_storeu_ps(lov + k, _mm512_sub_ps(s0, e0));
    _mm512_storeu_ps(lov + k + 16, _mm512_sub_ps(s1, e1));
    nan |= _mm512_cmp_ps_mask(t0, t1, _CMP_UNORD_Q);
    vmin0 = _mm512_min_ps(vmin0, t0);
    vmin1 = _mm512_min_ps(vmin1, t1);
  }
  for (; k < n; k += 16) {
    const __mmask16 m = tail_mask(n - k);
    __m512 e;
    const __m512 s = screen_score16(load(k, m), cn + k, p + k, q + k, w + k, v, m, e);
    const __m512 t = _mm512_add_ps(s, e);
    _mm512_mask_storeu_ps(lov + k, m, _mm512_sub_ps(s, e));
    nan |= _mm512_mask_cmp_ps_mask(m, t, t, _CMP_UNORD_Q);
    vmin0 = _mm512_mask_min_ps(vmin0, m, vmin0, t);
  }
  float mv = _mm512_reduce_min_ps(_mm512_min_ps(vmin0, vmin1));
  if (nan) mv = std::numeric_limits<float>::quiet_NaN();
  *m_out = mv;
  // Second pass over the stored lower bounds: few blocks keep anything. NGT_UQ ("not greater",
  // true when unordered) never drops a code on a NaN.
  const __m512 thr = _mm512_set1_ps(mv);
  __m512i cur = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  int64_t cnt = 0;
  for (k = 0; k < n; k += 16) {
    const __mmask16 m = tail_mask(n - k);
    const __m512 lo = _mm512_maskz_loadu_ps(m, lov + k);
    const __mmask16 keep = _mm512_mask_cmp_ps_mask(m, lo, thr, _CMP_NGT_UQ);
    if (keep) {
      // In place: the write position never passes the block just read.
      _mm512_storeu_si512(idx + cnt, _mm512_maskz_compress_epi32(keep, cur));
      _mm512_storeu_ps(lov + cnt, _mm512_maskz_compress_ps(keep, lo));
      cnt += __builtin_popcount(static_cast<unsigned>(keep));
    }
    cur = _mm512_add_epi32(cur, step);
  }
  return cnt;
}

RVQ_AVX512 int64_t screen_select_bf16_avx512(const uint16_t* dot, const float* cn, const float* p,
                                             const float* q, const float* w, const ScreenRow& row,
                                             int64_t n, int32_t* idx, float* lov, float* m_out) {
  return screen_select_avx512_generic(
      [&](int64_t k, __mmask16 m) RVQ_AVX512 { return load_bf16x16(dot + k, m); }, cn, p, q, w,
      row, n, idx, lov, m_out);
}

RVQ_AVX512 int64_t screen_select_i8_avx512(const int32_t* dot, float rs, const float* cs,
                                           const float* cn, const float* p, const float* q,
                                           const float* w, const ScreenRow& row, int64_t n,
                                           int32_t* idx, float* lov, float* m_out) {
  const __m512 vrs = _mm512_set1_ps(rs);
  return screen_select_avx512_generic(
      [&](int64_t k, __mmask16 m) RVQ_AVX512 {
        const __m512 pf = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, dot + k));
        return _mm512_mul_ps(_mm512_mul_ps(pf, vrs), _mm512_maskz_loadu_ps(m, cs + k));
      },
      cn, p, q, w, row, n, idx, lov, m_out);
}

// Centring tail shared by centre_row and residual_step: stores a (optional) and bf16(a), and
// accumulates ||a||^2, ||bf16(a)||^2, ||a - bf16(a)||^2 in fp32. fp64 would make each square
// exact but costs 6 conversions per 16 elements in the hottest epilogue loop; the fp32 sums'
// error (gamma_d relative, d 2^-149 absolute) is charged to the bound (docs/certified.md).
struct CentreAcc {
  __m512 n0, n1, n2;

  RVQ_AVX512 CentreAcc() : n0(_mm512_setzero_ps()), n1(_mm512_setzero_ps()), n2(_mm512_setzero_ps()) {}

  RVQ_AVX512 inline void step(__m512 v, __mmask16 m, float* a, uint16_t* a16) {
    if (a) _mm512_mask_storeu_ps(a, m, v);
    if (!a16) return;
    const __m512i bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1),
                  hi = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    __m512i u = _mm512_castps_si512(v);
    u = _mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
    _mm256_mask_storeu_epi16(a16, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16)));
    __m512 vb = _mm512_castsi512_ps(_mm512_and_si512(u, hi));
    __m512 dv = _mm512_sub_ps(v, vb);  // exact: the low mantissa bits of v (or a power of two)
    n0 = _mm512_fmadd_ps(v, v, n0);
    n1 = _mm512_fmadd_ps(vb, vb, n1);
    n2 = _mm512_fmadd_ps(dv, dv, n2);
  }

  RVQ_AVX512 void store(double* norms) const {
    norms[0] = _mm512_reduce_add_ps(n0);
    norms[1] = _mm512_reduce_add_ps(n1);
    norms[2] = _mm512_reduce_add_ps(n2);
  }
};

RVQ_AVX512 void centre_row_avx512(const float* x, const float* mu, int64_t d, float* a,
                                  uint16_t* a16, double* norms) {
  CentreAcc acc;
  for (int64_t i = 0; i < d; i += 16) {
    __mmask16 m = tail_mask(d - i);
    __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, mu + i));
    acc.step(v, m, a ? a + i : nullptr, a16 ? a16 + i : nullptr);
  }
  if (a16) acc.store(norms);
}

// One pass: dst = src - c, then the centring of the new residual for the next stage, exactly as
// centre_row would do it.
RVQ_AVX512 void residual_step_avx512(const float* src, float* dst, const float* c, int64_t d,
                                     const float* mu, float* a, uint16_t* a16, double* norms) {
  CentreAcc acc;
  for (int64_t i = 0; i < d; i += 16) {
    __mmask16 m = tail_mask(d - i);
    const __m512 r = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, src + i), _mm512_maskz_loadu_ps(m, c + i));
    _mm512_mask_storeu_ps(dst + i, m, r);
    acc.step(_mm512_sub_ps(r, _mm512_maskz_loadu_ps(m, mu + i)), m, a ? a + i : nullptr,
             a16 ? a16 + i : nullptr);
  }
  if (a16) acc.store(norms);
}

// Second pass of the int8 quantization (see quantize_row_i8), given max_i |x_i - mu_i|.
RVQ_AVX512 void quantize_i8_pass_avx512(const float* x, const float* mu, int64_t d, int64_t dp,
                                        float amax, int8_t* q, float* scale, double* norms) {
  float s, inv;
  i8_scale(amax, s, inv);
  const __m512 vs = _mm512_set1_ps(s), vinv = _mm512_set1_ps(inv),
               lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  __m512 n0 = _mm512_setzero_ps(), n2 = _mm512_setzero_ps();
  __m512i nq = _mm512_setzero_si512();
  for (int64_t i = 0; i < d; i += 16) {
    const __mmask16 m = tail_mask(d - i);
    const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, mu + i));
    __m512 qf = _mm512_roundscale_ps(_mm512_mul_ps(v, vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    qf = _mm512_min_ps(_mm512_max_ps(qf, lo), hi);  // max_ps returns lo for a NaN lane
    const __m512i qi = _mm512_cvtps_epi32(qf);
    _mm_mask_storeu_epi8(q + i, m, _mm512_cvtepi32_epi8(qi));
    const __m512 e = _mm512_fnmadd_ps(vs, qf, v);  // a_i - s q_i, one rounding
    n0 = _mm512_fmadd_ps(v, v, n0);
    n2 = _mm512_fmadd_ps(e, e, n2);
    nq = _mm512_add_epi32(nq, _mm512_mullo_epi32(qi, qi));  // exact: d * 127^2 < 2^31
  }
  for (int64_t i = d; i < dp; ++i) q[i] = 0;
  *scale = s;
  norms[0] = _mm512_reduce_add_ps(n0);
  norms[1] = static_cast<double>(s) * s * static_cast<double>(_mm512_reduce_add_epi32(nq));
  norms[2] = _mm512_reduce_add_ps(n2);
}

RVQ_AVX512 void quantize_row_i8_avx512(const float* x, const float* mu, int64_t d, int64_t dp,
                                       int8_t* q, float* scale, double* norms) {
  __m512 vmax = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; i += 16) {
    const __mmask16 m = tail_mask(d - i);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i),
                                                           _mm512_maskz_loadu_ps(m, mu + i))));
  }
  quantize_i8_pass_avx512(x, mu, d, dp, _mm512_reduce_max_ps(vmax), q, scale, norms);
}

RVQ_AVX512 void residual_step_i8_avx512(const float* src, float* dst, const float* c, int64_t d,
                                        const float* mu, int64_t dp, int8_t* q, float* scale,
                                        double* norms) {
  __m512 vmax = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; i += 16) {
    const __mmask16 m = tail_mask(d - i);
    const __m512 r = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, src + i), _mm512_maskz_loadu_ps(m, c + i));
    _mm512_mask_storeu_ps(dst + i, m, r);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_sub_ps(r, _mm512_maskz_loadu_ps(m, mu + i))));
  }
  quantize_i8_pass_avx512(dst, mu, d, dp, _mm512_reduce_max_ps(vmax), q, scale, norms);
}

RVQ_AVX512 void sum_rows_avx512(float* out, const float* const* rows, int64_t n, int64_t d) {
  for (int64_t i = 0; i < d; i += 16) {
    __mmask16 m = tail_mask(d - i);
    __m512 acc = _mm512_maskz_loadu_ps(m, rows[0] + i);
    for (int64_t j = 1; j < n; ++j) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, rows[j] + i));
    _mm512_mask_storeu_ps(out + i, m, acc);
  }
}

RVQ_AVX512 void add_row_avx512(float* acc, const float* c, int64_t d) {
  for (int64_t i = 0; i < d; i += 16) {
    __mmask16 m = tail_mask(d - i);
    _mm512_mask_storeu_ps(acc + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, acc + i),
                                                    _mm512_maskz_loadu_ps(m, c + i)));
  }
}

RVQ_AVX512 double sqdist_avx512(const float* a, const float* b, int64_t d) {
  __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) {
    __m512d x0 = _mm512_cvtps_pd(_mm256_loadu_ps(a + i)), y0 = _mm512_cvtps_pd(_mm256_loadu_ps(b + i));
    __m512d x1 = _mm512_cvtps_pd(_mm256_loadu_ps(a + i + 8)), y1 = _mm512_cvtps_pd(_mm256_loadu_ps(b + i + 8));
    __m512d t0 = _mm512_sub_pd(x0, y0), t1 = _mm512_sub_pd(x1, y1);
    acc0 = _mm512_fmadd_pd(t0, t0, acc0);
    acc1 = _mm512_fmadd_pd(t1, t1, acc1);
  }
  double s = _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
  for (; i < d; ++i) {
    double t = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    s += t * t;
  }
  return s;
}
RVQ_AVX512 float sqdist_f32_avx512(const float* a, const float* b, int64_t d) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= d; i += 32) {
    const __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    const __m512 t1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
    acc0 = _mm512_fmadd_ps(t0, t0, acc0);
    acc1 = _mm512_fmadd_ps(t1, t1, acc1);
  }
  for (; i < d; i += 16) {
    __mmask16 m = tail_mask(d - i);
    const __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
    acc0 = _mm512_fmadd_ps(t, t, acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}
#endif  // RVQ_X86

struct Dispatch {
  decltype(&argmin_f32_scalar) argmin_f32 = argmin_f32_scalar;
  decltype(&argmin_bf16_scalar) argmin_bf16 = argmin_bf16_scalar;
  decltype(&screen_bounds_scalar) screen_bounds = screen_bounds_scalar;
  decltype(&screen_bounds_i8_scalar) screen_bounds_i8 = screen_bounds_i8_scalar;
  decltype(&quantize_row_i8_scalar) quantize_i8 = quantize_row_i8_scalar;
  decltype(&residual_step_i8_scalar) residual_i8 = residual_step_i8_scalar;
  decltype(&screen_select_bf16_scalar) select_bf16 = screen_select_bf16_scalar;
  decltype(&screen_select_i8_scalar) select_i8 = screen_select_i8_scalar;
  decltype(&residual_step_scalar) residual = residual_step_scalar;
  decltype(&sum_rows_scalar) sum_rows = sum_rows_scalar;
  decltype(&add_row_scalar) add_row = add_row_scalar;
  decltype(&sqdist_scalar) sqdist = sqdist_scalar;
  decltype(&sqdist_f32_scalar) sqdist32 = sqdist_f32_scalar;
  decltype(&centre_row_scalar) centre = centre_row_scalar;
  const char* level = "scalar";

  Dispatch() { select(true); }

  // Picks AVX-512 when allowed and supported, else scalar; returns whether AVX-512 is in use.
  bool select(bool allow_avx512) {
    argmin_f32 = argmin_f32_scalar;
    argmin_bf16 = argmin_bf16_scalar;
    screen_bounds = screen_bounds_scalar;
    screen_bounds_i8 = screen_bounds_i8_scalar;
    quantize_i8 = quantize_row_i8_scalar;
    residual_i8 = residual_step_i8_scalar;
    select_bf16 = screen_select_bf16_scalar;
    select_i8 = screen_select_i8_scalar;
    residual = residual_step_scalar;
    sum_rows = sum_rows_scalar;
    add_row = add_row_scalar;
    sqdist = sqdist_scalar;
    sqdist32 = sqdist_f32_scalar;
    centre = centre_row_scalar;
    level = "scalar";
#if RVQ_X86
    __builtin_cpu_init();
    if (allow_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
      argmin_f32 = argmin_f32_avx512;
      argmin_bf16 = argmin_bf16_avx512;
      screen_bounds = screen_bounds_avx512;
      screen_bounds_i8 = screen_bounds_i8_avx512;
      quantize_i8 = quantize_row_i8_avx512;
      residual_i8 = residual_step_i8_avx512;
      select_bf16 = screen_select_bf16_avx512;
      select_i8 = screen_select_i8_avx512;
      residual = residual_step_avx512;
      sum_rows = sum_rows_avx512;
      add_row = add_row_avx512;
      sqdist = sqdist_avx512;
      sqdist32 = sqdist_f32_avx512;
      centre = centre_row_avx512;
      level = "avx512";
    }
#endif
    return level[0] == 'a';
  }
};

Dispatch& dispatch() {
  static Dispatch d;
  return d;
}

}  // namespace

void argmin_update_f32(const float* dot, const float* cn, int64_t n, int64_t base, float& best,
                       int64_t& best_idx) {
  dispatch().argmin_f32(dot, cn, n, base, best, best_idx);
}

void argmin_update_bf16(const uint16_t* dot, const float* cn, int64_t n, int64_t base,
                        float& best, int64_t& best_idx) {
  dispatch().argmin_bf16(dot, cn, n, base, best, best_idx);
}

float screen_bounds_bf16(const uint16_t* dot, const float* cn, const float* p, const float* q,
                         const float* w, const ScreenRow& row, int64_t n, float* lo) {
  return dispatch().screen_bounds(dot, cn, p, q, w, row, n, lo);
}

float screen_bounds_i8(const int32_t* dot, float row_scale, const float* code_scale,
                       const float* cn, const float* p, const float* q, const float* w,
                       const ScreenRow& row, int64_t n, float* lo) {
  return dispatch().screen_bounds_i8(dot, row_scale, code_scale, cn, p, q, w, row, n, lo);
}

void quantize_row_i8(const float* x, const float* mu, int64_t d, int64_t dp, int8_t* q,
                     float* scale, double* norms) {
  dispatch().quantize_i8(x, mu, d, dp, q, scale, norms);
}

void residual_step_i8(const float* src, float* dst, const float* c, int64_t d, const float* mu,
                      int64_t dp, int8_t* q, float* scale, double* norms) {
  dispatch().residual_i8(src, dst, c, d, mu, dp, q, scale, norms);
}

int64_t screen_select_bf16(const uint16_t* dot, const float* cn, const float* p, const float* q,
                           const float* w, const ScreenRow& row, int64_t n, int32_t* idx,
                           float* lov, float* m) {
  return dispatch().select_bf16(dot, cn, p, q, w, row, n, idx, lov, m);
}

int64_t screen_select_i8(const int32_t* dot, float row_scale, const float* code_scale,
                         const float* cn, const float* p, const float* q, const float* w,
                         const ScreenRow& row, int64_t n, int32_t* idx, float* lov, float* m) {
  return dispatch().select_i8(dot, row_scale, code_scale, cn, p, q, w, row, n, idx, lov, m);
}

void residual_step(const float* src, float* dst, const float* c, int64_t d, const float* mu,
                   float* a, uint16_t* a16, double* norms) {
  dispatch().residual(src, dst, c, d, mu, a, a16, norms);
}

void sum_rows(float* out, const float* const* rows, int64_t n, int64_t d) {
  dispatch().sum_rows(out, rows, n, d);
}

void centre_row(const float* x, const float* mu, int64_t d, float* a, uint16_t* a16,
                double* norms) {
  dispatch().centre(x, mu, d, a, a16, norms);
}

void add_row(float* acc, const float* c, int64_t d) { dispatch().add_row(acc, c, d); }

double sqdist_f64(const float* a, const float* b, int64_t d) { return dispatch().sqdist(a, b, d); }

float sqdist_f32(const float* a, const float* b, int64_t d) { return dispatch().sqdist32(a, b, d); }

const char* simd_level() { return dispatch().level; }

bool set_simd_avx512(bool allow) { return dispatch().select(allow); }

}  // namespace cpu
}  // namespace rvqfast

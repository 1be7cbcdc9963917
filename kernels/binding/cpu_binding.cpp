// Thin torch binding for the CPU kernels (module rvqfast._C).
//
// Converts inputs to contiguous fp32 / int64 (fp16 and bf16 inputs are computed in fp32),
// checks shapes defensively (the public ops in rvqfast.ops validate first, with friendlier
// messages), releases the GIL and calls the raw-pointer kernels in kernels/cpu.
#include <torch/extension.h>

#include <atomic>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cpu/decode_ema.h"
#include "cpu/gemm_vnni.h"
#include "cpu/gemm.h"
#include "cpu/grouped.h"
#include "cpu/search.h"
#include "cpu/simd.h"
#include "cpu/train_step.h"

namespace {

using rvqfast::cpu::Precision;

// The hand-written VNNI GEMM is exact by construction (vpdpbusd accumulates u8 x s8 products in
// int32 without saturation; tests/test_certified_tiled.py checks it against int64 products), so
// only oneDNN's GEMM needs the start-up probe: a CPU whose _int_mm failed it keeps the int8
// screen when the VNNI kernel runs.
bool int8_screen_ok(int64_t D) {
  return D <= rvqfast::cpu::kMaxInt8Dim &&
         (rvqfast::cpu::int8_gemm_vnni_enabled() || rvqfast::cpu::int8_gemm_exact());
}

// "certified" is the bf16 screen here; rvqfast.ops resolves it to the faster screen for the shape
// before calling. "certified-int8" falls back to the bf16 screen (same exact answers) where the
// int8 GEMM is not exact on this build or D is too large for int32 sums.
Precision parse_precision(const std::string& p, int64_t D) {
  if (p == "exact") return Precision::kExact;
  if (p == "certified" || p == "certified-bf16") return Precision::kCertified;
  if (p == "certified-int8")
    return int8_screen_ok(D) ? Precision::kCertifiedInt8 : Precision::kCertified;
  if (p == "bf16") return Precision::kBf16;
  TORCH_CHECK_VALUE(false,
                    "precision must be 'exact', 'certified', 'certified-bf16', 'certified-int8' "
                    "or 'bf16', got '", p, "'");
}

// Prepared codebooks (centring, norms, duplicate map, bf16 / int8 copies and bound coefficients)
// cached across calls. An entry is found by bitwise comparison with a private copy of the codes,
// not by tensor identity or version counter: in-place updates that bypass autograd's version
// counter (`.data`, numpy views) then cannot serve stale codes, and a mismatch (a codebook
// being trained) is usually detected within the first few bytes. The prepared codebooks point
// at that copy, so an entry stays valid after the caller's tensor is gone.
struct CachedCodebooks {
  Precision screen;
  int64_t Q, K, D;
  std::vector<float> codes;
  std::vector<rvqfast::cpu::PreparedCodebook> pcs;
};

// At most 4 codebook sets of at most 8 M code values in all (with the centred and quantized
// copies, ~70-80 MiB when full, like the per-thread pool this cache replaced).
constexpr size_t kCacheEntries = 4;
constexpr int64_t kCacheMaxFloats = int64_t{8} << 20;

std::mutex g_cache_mu;
std::list<std::shared_ptr<const CachedCodebooks>> g_cache;  // most recently used first
std::atomic<int64_t> g_cache_hits{0}, g_cache_misses{0};

std::shared_ptr<const CachedCodebooks> prepared_codebooks(const float* codes, int64_t Q, int64_t K,
                                                          int64_t D, Precision p) {
  const Precision screen = p == Precision::kBf16 ? Precision::kCertified : p;
  const size_t n = static_cast<size_t>(Q * K * D);
  {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    for (auto it = g_cache.begin(); it != g_cache.end(); ++it) {
      const auto& e = **it;
      if (e.screen == screen && e.Q == Q && e.K == K && e.D == D &&
          std::memcmp(e.codes.data(), codes, n * sizeof(float)) == 0) {
        auto hit = *it;
        g_cache.erase(it);
        g_cache.push_front(hit);
        ++g_cache_hits;
        return hit;
      }
    }
  }
  ++g_cache_misses;
  auto e = std::make_shared<CachedCodebooks>();
  e->screen = screen;
  e->Q = Q;
  e->K = K;
  e->D = D;
  e->codes.assign(codes, codes + n);
  e->pcs.resize(static_cast<size_t>(Q));
  // Stages are prepared independently: one per thread.
  at::parallel_for(0, Q, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q)
      rvqfast::cpu::prepare_codebook_into(e->pcs[q], e->codes.data() + q * K * D, K, D, screen);
  });
  if (Q * K * D <= kCacheMaxFloats) {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    g_cache.push_front(e);
    int64_t total = 0;
    for (const auto& c : g_cache) total += c->Q * c->K * c->D;
    while (g_cache.size() > kCacheEntries || total > kCacheMaxFloats) {
      total -= g_cache.back()->Q * g_cache.back()->K * g_cache.back()->D;
      g_cache.pop_back();
    }
  }
  return e;
}

void clear_codebook_cache() {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  g_cache.clear();
}

at::Tensor as_f32(const at::Tensor& t, const char* name, int64_t ndim) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK_VALUE(t.dim() == ndim, name, " must have ", ndim, " dims, got ", t.sizes());
  TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()), name, " must be floating point, got ",
                    t.scalar_type());
  return t.to(at::kFloat).contiguous();
}

at::Tensor as_index(const at::Tensor& t, const char* name, int64_t ndim, int64_t num_codes) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, " must be a CPU tensor, got device ", t.device());
  TORCH_CHECK_VALUE(t.dim() == ndim, name, " must have ", ndim, " dims, got ", t.sizes());
  TORCH_CHECK_VALUE(!at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kBool, name,
                    " must be an integer tensor, got ", t.scalar_type());
  at::Tensor i = t.to(at::kLong).contiguous();
  if (i.numel()) {
    const int64_t lo = i.min().item<int64_t>(), hi = i.max().item<int64_t>();
    TORCH_CHECK_VALUE(lo >= -1 && hi < num_codes, name, " out of range: values must be in [0, ",
                      num_codes, ") or -1, got min ", lo, ", max ", hi);
  }
  return i;
}

std::tuple<at::Tensor, at::Tensor> nearest_code(const at::Tensor& x_in, const at::Tensor& cb_in,
                                                const std::string& precision) {
  at::Tensor x = as_f32(x_in, "x", 2), cb = as_f32(cb_in, "codebook", 2);
  const int64_t N = x.size(0), D = x.size(1), K = cb.size(0);
  const Precision p = parse_precision(precision, D);
  TORCH_CHECK_VALUE(K >= 1, "codebook is empty: expected at least one code");
  TORCH_CHECK_VALUE(cb.size(1) == D, "x has D=", D, " but codebook has D=", cb.size(1));
  at::Tensor idx = at::empty({N}, at::kLong), dist = at::empty({N}, at::kFloat);
  if (N == 0) return {idx, dist};
  {
    pybind11::gil_scoped_release nogil;
    const auto pc = prepared_codebooks(cb.data_ptr<float>(), 1, K, D, p);
    rvqfast::cpu::nearest_code(x.data_ptr<float>(), N, pc->pcs[0], p, idx.data_ptr<int64_t>(),
                               dist.data_ptr<float>());
  }
  return {idx, dist};
}

std::tuple<at::Tensor, at::Tensor> rvq_encode(const at::Tensor& x_in, const at::Tensor& cbs_in,
                                              const std::string& precision) {
  at::Tensor x = as_f32(x_in, "x", 2), cbs = as_f32(cbs_in, "codebooks", 3);
  const int64_t N = x.size(0), D = x.size(1), Q = cbs.size(0), K = cbs.size(1);
  const Precision p = parse_precision(precision, D);
  TORCH_CHECK_VALUE(Q >= 1 && K >= 1, "codebooks must have Q >= 1 stages and K >= 1 codes, got ",
                    cbs.sizes());
  TORCH_CHECK_VALUE(cbs.size(2) == D, "x has D=", D, " but codebooks has D=", cbs.size(2));
  at::Tensor idx = at::empty({N, Q}, at::kLong), quant = at::empty({N, D}, at::kFloat);
  if (N == 0) return {idx, quant};
  {
    pybind11::gil_scoped_release nogil;
    const auto pc = prepared_codebooks(cbs.data_ptr<float>(), Q, K, D, p);
    rvqfast::cpu::rvq_encode(x.data_ptr<float>(), N, pc->pcs, p, idx.data_ptr<int64_t>(),
                             quant.data_ptr<float>());
  }
  return {idx, quant};
}

// Grouped ops (groups lead: x (G, N, D)); each group's codebooks are one cache entry.
std::tuple<at::Tensor, at::Tensor> grouped_nearest_code(const at::Tensor& x_in,
                                                        const at::Tensor& cbs_in,
                                                        const std::string& precision) {
  at::Tensor x = as_f32(x_in, "x", 3), cbs = as_f32(cbs_in, "codebooks", 3);
  const int64_t G = x.size(0), N = x.size(1), D = x.size(2), K = cbs.size(1);
  const Precision p = parse_precision(precision, D);
  TORCH_CHECK_VALUE(cbs.size(0) == G, "x has G=", G, " groups but codebooks has ", cbs.size(0));
  TORCH_CHECK_VALUE(K >= 1, "codebooks is empty: expected at least one code per group");
  TORCH_CHECK_VALUE(cbs.size(2) == D, "x has D=", D, " but codebooks has D=", cbs.size(2));
  at::Tensor idx = at::empty({G, N}, at::kLong), dist = at::empty({G, N}, at::kFloat);
  if (N == 0 || G == 0) return {idx, dist};
  {
    pybind11::gil_scoped_release nogil;
    std::vector<std::shared_ptr<const CachedCodebooks>> held;
    std::vector<const rvqfast::cpu::PreparedCodebook*> pcs;
    for (int64_t g = 0; g < G; ++g) {
      held.push_back(prepared_codebooks(cbs.data_ptr<float>() + g * K * D, 1, K, D, p));
      pcs.push_back(&held.back()->pcs[0]);
    }
    rvqfast::cpu::grouped_nearest_code(x.data_ptr<float>(), G, N, pcs, p,
                                       idx.data_ptr<int64_t>(), dist.data_ptr<float>());
  }
  return {idx, dist};
}

std::tuple<at::Tensor, at::Tensor> grouped_rvq_encode(const at::Tensor& x_in,
                                                      const at::Tensor& cbs_in,
                                                      const std::string& precision) {
  at::Tensor x = as_f32(x_in, "x", 3), cbs = as_f32(cbs_in, "codebooks", 4);
  const int64_t G = x.size(0), N = x.size(1), D = x.size(2), Q = cbs.size(1), K = cbs.size(2);
  const Precision p = parse_precision(precision, D);
  TORCH_CHECK_VALUE(cbs.size(0) == G, "x has G=", G, " groups but codebooks has ", cbs.size(0));
  TORCH_CHECK_VALUE(Q >= 1 && K >= 1, "codebooks must have Q >= 1 stages and K >= 1 codes, got ",
                    cbs.sizes());
  TORCH_CHECK_VALUE(cbs.size(3) == D, "x has D=", D, " but codebooks has D=", cbs.size(3));
  at::Tensor idx = at::empty({G, N, Q}, at::kLong), quant = at::empty({G, N, D}, at::kFloat);
  if (N == 0 || G == 0) return {idx, quant};
  {
    pybind11::gil_scoped_release nogil;
    std::vector<std::shared_ptr<const CachedCodebooks>> held;
    std::vector<const std::vector<rvqfast::cpu::PreparedCodebook>*> stages;
    for (int64_t g = 0; g < G; ++g) {
      held.push_back(prepared_codebooks(cbs.data_ptr<float>() + g * Q * K * D, Q, K, D, p));
      stages.push_back(&held.back()->pcs);
    }
    rvqfast::cpu::grouped_rvq_encode(x.data_ptr<float>(), G, N, stages, p,
                                     idx.data_ptr<int64_t>(), quant.data_ptr<float>());
  }
  return {idx, quant};
}

at::Tensor rvq_decode(const at::Tensor& idx_in, const at::Tensor& cbs_in) {
  at::Tensor cbs = as_f32(cbs_in, "codebooks", 3);
  const int64_t Q = cbs.size(0), K = cbs.size(1), D = cbs.size(2);
  at::Tensor idx = as_index(idx_in, "indices", 2, K);
  TORCH_CHECK_VALUE(idx.size(1) <= Q, "indices has ", idx.size(1), " stages but codebooks only ", Q);
  const int64_t N = idx.size(0);
  at::Tensor out = at::empty({N, D}, at::kFloat);
  pybind11::gil_scoped_release nogil;
  rvqfast::cpu::rvq_decode(idx.data_ptr<int64_t>(), N, idx.size(1), cbs.data_ptr<float>(), K, D,
                           out.data_ptr<float>());
  return out;
}

std::tuple<at::Tensor, at::Tensor> ema_stats(const at::Tensor& x_in, const at::Tensor& idx_in,
                                             int64_t num_codes) {
  TORCH_CHECK_VALUE(num_codes >= 1, "num_codes must be >= 1, got ", num_codes);
  at::Tensor x = as_f32(x_in, "x", 2);
  at::Tensor idx = as_index(idx_in, "indices", 1, num_codes);
  TORCH_CHECK_VALUE(idx.size(0) == x.size(0), "indices has ", idx.size(0), " rows but x has ",
                    x.size(0));
  at::Tensor counts = at::empty({num_codes}, at::kFloat);
  at::Tensor sums = at::empty({num_codes, x.size(1)}, at::kFloat);
  pybind11::gil_scoped_release nogil;
  rvqfast::cpu::ema_stats(x.data_ptr<float>(), idx.data_ptr<int64_t>(), x.size(0), x.size(1),
                          num_codes, counts.data_ptr<float>(), sums.data_ptr<float>());
  return {counts, sums};
}

// A contiguous float32 CPU output of the given shape (written in place by a kernel).
void check_out(const at::Tensor& t, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                        t.sizes() == shape,
                    name, " must be a contiguous float32 CPU tensor of shape ", shape, ", got ",
                    t.scalar_type(), " ", t.sizes(), t.is_contiguous() ? "" : " (not contiguous)");
}

bool overlaps(const at::Tensor& a, const at::Tensor& b) {
  const char* pa = static_cast<const char*>(a.data_ptr());
  const char* pb = static_cast<const char*>(b.data_ptr());
  const int64_t na = a.numel() * a.element_size(), nb = b.numel() * b.element_size();
  return na && nb && pa < pb + nb && pb < pa + na;
}

void residual_update(const at::Tensor& r_in, const at::Tensor& cb_in, const at::Tensor& idx_in,
                     at::Tensor out, std::optional<at::Tensor> counts,
                     std::optional<at::Tensor> sums) {
  at::Tensor r = as_f32(r_in, "r", 2), cb = as_f32(cb_in, "codebook", 2);
  const int64_t N = r.size(0), D = r.size(1), K = cb.size(0);
  TORCH_CHECK_VALUE(K >= 1 && cb.size(1) == D, "codebook must be (K >= 1, ", D, "), got ",
                    cb.sizes());
  at::Tensor idx = as_index(idx_in, "indices", 1, K);
  TORCH_CHECK_VALUE(idx.size(0) == N, "indices has ", idx.size(0), " rows but r has ", N);
  TORCH_CHECK_VALUE(N == 0 || idx.min().item<int64_t>() >= 0, "indices must be in [0, ", K,
                    "): every row needs a code");
  check_out(out, "out", {N, D});
  TORCH_CHECK_VALUE(counts.has_value() == sums.has_value(),
                    "counts and sums must be given together");
  TORCH_CHECK_VALUE(!overlaps(out, r), "out must not overlap r");
  float* cp = nullptr;
  float* sp = nullptr;
  if (counts.has_value()) {
    check_out(*counts, "counts", {K});
    check_out(*sums, "sums", {K, D});
    TORCH_CHECK_VALUE(!overlaps(*sums, r) && !overlaps(*sums, out) && !overlaps(*counts, r) &&
                          !overlaps(*counts, out) && !overlaps(*counts, *sums),
                      "counts and sums must not overlap r, out or each other");
    cp = counts->data_ptr<float>();
    sp = sums->data_ptr<float>();
  }
  pybind11::gil_scoped_release nogil;
  rvqfast::cpu::residual_update(r.data_ptr<float>(), cb.data_ptr<float>(), idx.data_ptr<int64_t>(),
                                N, D, K, out.data_ptr<float>(), cp, sp);
}

at::Tensor rvq_stages_grad(const at::Tensor& res_in, const at::Tensor& g_in,
                           const at::Tensor& sqnorm_in, const at::Tensor& code_sq_in,
                           const at::Tensor& dist_sq_in, const at::Tensor& commit_in,
                           bool rotation) {
  at::Tensor res = as_f32(res_in, "residuals", 3), g = as_f32(g_in, "g", 2);
  const int64_t A = res.size(0) - 1, N = res.size(1), D = res.size(2);
  TORCH_CHECK_VALUE(A >= 0, "residuals must hold at least r_0");
  TORCH_CHECK_VALUE(g.size(0) == N && g.size(1) == D, "g must be (", N, ", ", D, "), got ",
                    g.sizes());
  at::Tensor sqnorm = as_f32(sqnorm_in, "sqnorm", 2), code_sq = as_f32(code_sq_in, "code_sq", 2);
  at::Tensor dist_sq = as_f32(dist_sq_in, "dist_sq", 2), commit = as_f32(commit_in, "commit", 1);
  TORCH_CHECK_VALUE(sqnorm.size(0) == A + 1 && sqnorm.size(1) == N, "sqnorm must be (", A + 1,
                    ", ", N, "), got ", sqnorm.sizes());
  TORCH_CHECK_VALUE(code_sq.size(0) == A && code_sq.size(1) == N, "code_sq must be (", A, ", ",
                    N, "), got ", code_sq.sizes());
  TORCH_CHECK_VALUE(dist_sq.size(0) == A && dist_sq.size(1) == N, "dist_sq must be (", A, ", ",
                    N, "), got ", dist_sq.sizes());
  TORCH_CHECK_VALUE(commit.size(0) == A, "commit must be (", A, "), got ", commit.sizes());
  at::Tensor grad = at::empty({N, D}, at::kFloat);
  pybind11::gil_scoped_release nogil;
  rvqfast::cpu::rvq_stages_grad(res.data_ptr<float>(), g.data_ptr<float>(), sqnorm.data_ptr<float>(),
                                code_sq.data_ptr<float>(), dist_sq.data_ptr<float>(),
                                commit.data_ptr<float>(), A, N, D, rotation,
                                grad.data_ptr<float>());
  return grad;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> screen_bounds(const at::Tensor& x_in,
                                                             const at::Tensor& cb_in,
                                                             const std::string& precision) {
  at::Tensor x = as_f32(x_in, "x", 2), cb = as_f32(cb_in, "codebook", 2);
  const int64_t N = x.size(0), D = x.size(1), K = cb.size(0);
  TORCH_CHECK_VALUE(K >= 1 && cb.size(1) == D, "codebook must be (K >= 1, ", D, "), got ",
                    cb.sizes());
  const Precision p = parse_precision(precision, D);
  TORCH_CHECK_VALUE(p == Precision::kCertified || p == Precision::kCertifiedInt8,
                    "precision must name a certified screen, got '", precision, "'");
  at::Tensor lo = at::empty({N, K}, at::kFloat), hi = at::empty({N, K}, at::kFloat);
  auto pc = rvqfast::cpu::prepare_codebook(cb.data_ptr<float>(), K, D, p);
  {
    pybind11::gil_scoped_release nogil;
    rvqfast::cpu::screen_bounds(x.data_ptr<float>(), N, pc, p, lo.data_ptr<float>(),
                                hi.data_ptr<float>());
  }
  at::Tensor mu = at::from_blob(pc.mu.data(), {D}, at::kFloat).clone();
  return {lo, hi, mu};
}

pybind11::dict certified_stats() {
  const auto s = rvqfast::cpu::certified_stats();
  pybind11::dict d;
  d["rows"] = s.rows;
  d["overflow_rows"] = s.overflow_rows;
  d["candidates"] = s.candidates;
  d["max_candidates"] = s.max_candidates;
  d["mean_candidates"] = s.rows ? static_cast<double>(s.candidates) / static_cast<double>(s.rows) : 0.0;
  return d;
}

}  // namespace

// Test hook: a (m, dp) int8 times b (K, dp) int8 transposed, exact int32, through the GEMM the
// int8 screen uses now (the VNNI kernel packs b as prepare_codebook does).
at::Tensor int8_gemm(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK_VALUE(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1),
                    "int8_gemm: expected a (m, dp) and b (K, dp), got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK_VALUE(a.scalar_type() == at::kChar && b.scalar_type() == at::kChar,
                    "int8_gemm: expected int8 tensors");
  const int64_t m = a.size(0), K = b.size(0), dp = a.size(1);
  TORCH_CHECK_VALUE(m > 0 && K > 0 && dp > 0 && dp % 4 == 0 && dp <= rvqfast::cpu::kMaxInt8Dim,
                    "int8_gemm: expected non-empty inputs and dp a multiple of 4 up to ",
                    rvqfast::cpu::kMaxInt8Dim, ", got ", a.sizes(), " and ", b.sizes());
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  if (!rvqfast::cpu::int8_gemm_vnni_enabled()) {
    at::Tensor c = at::empty({m, K}, at::kInt);
    rvqfast::cpu::gemm_nt_s8(m, K, dp, ac.data_ptr<int8_t>(), bc.data_ptr<int8_t>(), c.data_ptr<int32_t>());
    return c;
  }
  std::vector<int8_t> packed;
  std::vector<int32_t> bsum;
  rvqfast::cpu::pack_codes_vnni(bc.data_ptr<int8_t>(), K, dp, packed, bsum);
  const int64_t ld = rvqfast::cpu::vnni_padded_codes(K);
  at::Tensor c = at::empty({rvqfast::cpu::vnni_padded_rows(m), ld}, at::kInt);
  rvqfast::cpu::gemm_s8_vnni(ac.data_ptr<int8_t>(), m, dp, packed.data(), bsum.data(), K,
                             c.data_ptr<int32_t>(), ld);
  return c.narrow(0, 0, m).narrow(1, 0, K).contiguous();
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rvqfast C++ CPU kernels (nearest code, RVQ encode/decode, EMA stats, certified bf16)";
  m.def("nearest_code", &nearest_code, "x (N,D), codebook (K,D), precision -> (indices, sqdist)",
        pybind11::arg("x"), pybind11::arg("codebook"), pybind11::arg("precision") = "exact");
  m.def("rvq_encode", &rvq_encode, "x (N,D), codebooks (Q,K,D), precision -> (indices, quantized)",
        pybind11::arg("x"), pybind11::arg("codebooks"), pybind11::arg("precision") = "exact");
  m.def("grouped_nearest_code", &grouped_nearest_code,
        "x (G,N,D), codebooks (G,K,D), precision -> (indices (G,N), sqdist (G,N))",
        pybind11::arg("x"), pybind11::arg("codebooks"), pybind11::arg("precision") = "exact");
  m.def("grouped_rvq_encode", &grouped_rvq_encode,
        "x (G,N,D), codebooks (G,Q,K,D), precision -> (indices (G,N,Q), quantized (G,N,D))",
        pybind11::arg("x"), pybind11::arg("codebooks"), pybind11::arg("precision") = "exact");
  m.def("rvq_decode", &rvq_decode, "indices (N,Q') with -1 = skip, codebooks (Q,K,D) -> (N,D)",
        pybind11::arg("indices"), pybind11::arg("codebooks"));
  m.def("ema_stats", &ema_stats, "x (N,D), indices (N,), num_codes -> (counts (K,), sums (K,D))",
        pybind11::arg("x"), pybind11::arg("indices"), pybind11::arg("num_codes"));
  m.def("residual_update", &residual_update,
        "r (N,D), codebook (K,D), indices (N,), out (N,D), counts (K,) or None, sums (K,D) or "
        "None: out = r - codebook[indices]; counts, sums = the EMA statistics of r",
        pybind11::arg("r"), pybind11::arg("codebook"), pybind11::arg("indices"),
        pybind11::arg("out"), pybind11::arg("counts"), pybind11::arg("sums"));
  m.def("rvq_stages_grad", &rvq_stages_grad,
        "residuals (A+1,N,D), g (N,D), sqnorm (A+1,N), code_sq (A,N), dist_sq (A,N), commit (A,), "
        "rotation -> gradient (N,D) of the Euclidean stages",
        pybind11::arg("residuals"), pybind11::arg("g"), pybind11::arg("sqnorm"),
        pybind11::arg("code_sq"), pybind11::arg("dist_sq"), pybind11::arg("commit"),
        pybind11::arg("rotation"));
  m.def("certified_stats", &certified_stats,
        "Certified-mode counters since the last reset: rows, overflow_rows, candidates, "
        "mean_candidates");
  m.def("reset_certified_stats", &rvqfast::cpu::reset_certified_stats);
  m.def("screen_bounds", &screen_bounds,
        "Test hook: x (N,D), codebook (K,D), certified precision -> (lo, hi, mu): the screen's "
        "rigorous interval [lo, hi] (N,K) for ||x - c||^2 - ||x - mu||^2, mu the centring mean",
        pybind11::arg("x"), pybind11::arg("codebook"), pybind11::arg("precision"));
  m.def("int8_screen_ok", &int8_screen_ok,
        "Whether the certified int8 screen runs for dimension D (exact int8 GEMM on this build, "
        "D <= 32768); otherwise 'certified-int8' uses the bf16 screen",
        pybind11::arg("dim"));
  m.def("clear_codebook_cache", &clear_codebook_cache,
        "Drop the prepared-codebook cache (benchmarks: measure the preparation cost)");
  m.def("codebook_cache_stats", []() {
    pybind11::dict d;
    d["hits"] = g_cache_hits.load();
    d["misses"] = g_cache_misses.load();
    return d;
  });
  m.def("set_candidate_cap", &rvqfast::cpu::set_candidate_cap,
        "Candidate cap per row in certified mode (0 = automatic: max(16, K/16))",
        pybind11::arg("cap"));
  m.def("candidate_cap", &rvqfast::cpu::candidate_cap, pybind11::arg("num_codes"));
  m.def("set_gemm_onednn", &rvqfast::cpu::set_gemm_onednn,
        "Test/benchmark hook: GEMMs through oneDNN (true) or at::mm (false); returns whether "
        "oneDNN is in use",
        pybind11::arg("allow"));
  m.def("set_int8_gemm_vnni", &rvqfast::cpu::set_int8_gemm_vnni,
        "Test/benchmark hook: the int8 screen's GEMM through the hand-written AVX512-VNNI kernel "
        "(true, default where supported) or oneDNN (false); returns whether the kernel is in use",
        pybind11::arg("allow"));
  m.def("int8_gemm_vnni_supported", &rvqfast::cpu::int8_gemm_vnni_supported);
  m.def("int8_gemm", &int8_gemm, "Test hook: exact int32 a @ b.T of int8 (m, dp) and (K, dp)",
        pybind11::arg("a"), pybind11::arg("b"));
  m.def("int8_gemm_kernel", []() {
    return std::string(rvqfast::cpu::int8_gemm_vnni_enabled() ? "vnni" : "onednn");
  });
  m.def("simd_level", []() { return std::string(rvqfast::cpu::simd_level()); });
  m.def("set_simd_avx512", &rvqfast::cpu::set_simd_avx512,
        "Test hook: allow/forbid the AVX-512 kernels; returns whether AVX-512 is in use",
        pybind11::arg("allow"));
}

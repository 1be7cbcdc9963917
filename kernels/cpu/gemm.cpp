#include "cpu/gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <vector>

#if defined(__linux__)
#include <dlfcn.h>
#endif

namespace rvqfast {
namespace cpu {
namespace {

at::Tensor borrow(const void* p, int64_t rows, int64_t cols, at::ScalarType t) {
  // from_blob never frees or copies: the caller owns every buffer for the call's duration.
  return at::from_blob(const_cast<void*>(p), {rows, cols}, at::TensorOptions().dtype(t));
}

// PyTorch turns MKL's dynamic threading off, so an MKL GEMM called from inside at::parallel_for
// would start its own threads on top of ours (measured 3-8x slower on 2 cores). MKL's
// thread-local thread count fixes that; it is looked up at run time so builds whose BLAS is not
// MKL simply skip it (oneDNN, used for bf16, already runs sequentially inside a parallel region).
using SetLocalThreads = int (*)(int);

SetLocalThreads mkl_set_local_threads() {
  static const SetLocalThreads fn = []() -> SetLocalThreads {
#if defined(__linux__)
    void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    void* sym = lib ? dlsym(lib, "MKL_Set_Num_Threads_Local") : nullptr;
    if (!sym) sym = dlsym(RTLD_DEFAULT, "MKL_Set_Num_Threads_Local");
    return reinterpret_cast<SetLocalThreads>(sym);
#else
    return nullptr;
#endif
  }();
  return fn;
}

struct SequentialBlasGuard {
  int prev = -1;
  SequentialBlasGuard() {
    if (at::in_parallel_region() && mkl_set_local_threads()) prev = mkl_set_local_threads()(1);
  }
  ~SequentialBlasGuard() {
    if (prev >= 0) mkl_set_local_threads()(prev);
  }
};

// ATen's oneDNN matmul (exported by libtorch_cpu but not declared in the installed headers).
// For fp32 on AMD CPUs it measured 1.5-1.8x faster than the MKL sgemm behind at::mm (MKL takes a
// generic code path there). Looked up at run time so a torch built without it still works.
using MkldnnMatmul = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, float,
                              float);

MkldnnMatmul mkldnn_matmul_fn() {
  static const MkldnnMatmul fn = []() -> MkldnnMatmul {
#if defined(__linux__)
    if (!at::hasMKLDNN()) return nullptr;
    const char* name = "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff";
    void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    void* sym = lib ? dlsym(lib, name) : nullptr;
    if (!sym) sym = dlsym(RTLD_DEFAULT, name);
    return reinterpret_cast<MkldnnMatmul>(sym);
#else
    return nullptr;
#endif
  }();
  return fn;
}

// oneDNN honours torch's fp32 matmul precision setting (bf32 / tf32 down-conversion). The exact
// search needs IEEE fp32 products, so any reduced setting sends fp32 GEMMs back to at::mm.
bool onednn_fp32_is_ieee() {
  const auto p = at::globalContext().float32Precision(at::Float32Backend::MKLDNN,
                                                      at::Float32Op::MATMUL);
  return p != at::Float32Precision::BF16 && p != at::Float32Precision::TF32;
}

bool g_use_onednn = true;

void gemm_nt(int64_t m, int64_t n, int64_t k, const void* a, const void* b, void* c,
             at::ScalarType t) {
  at::Tensor ta = borrow(a, m, k, t), tb = borrow(b, n, k, t), tc = borrow(c, m, n, t);
  if (g_use_onednn && !at::in_parallel_region() && mkldnn_matmul_fn() &&
      (t != at::kFloat || onednn_fp32_is_ieee())) {
    mkldnn_matmul_fn()(ta, tb.t(), tc, 0.0f, 1.0f);
    return;
  }
  SequentialBlasGuard guard;
  at::mm_out(tc, ta, tb.t());
}

}  // namespace

bool set_gemm_onednn(bool allow) {
  g_use_onednn = allow;
  return allow && mkldnn_matmul_fn() != nullptr;
}

void gemm_nt_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
  gemm_nt(m, n, k, a, b, c, at::kFloat);
}

void gemm_nt_bf16(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b,
                  uint16_t* c) {
  gemm_nt(m, n, k, a, b, c, at::kBFloat16);
}

void gemm_nt_s8(int64_t m, int64_t n, int64_t k, const int8_t* a, const int8_t* b, int32_t* c) {
  at::Tensor ta = borrow(a, m, k, at::kChar), tb = borrow(b, n, k, at::kChar),
             tc = borrow(c, m, n, at::kInt);
  at::_int_mm_out(tc, ta, tb.t());
}

namespace {

// One pass of the exactness probe (see int8_gemm_exact).
bool int8_probe() {
  // Shapes straddling oneDNN's blocking; values at the int8 extremes with mixed signs, the
  // pattern on which pair-wise int16 accumulation (vpmaddubsw) would saturate.
  const int64_t shapes[][3] = {{1, 1, 4}, {7, 5, 12}, {33, 17, 64}, {70, 129, 516}};
  for (const auto& sh : shapes) {
    const int64_t m = sh[0], n = sh[1], k = sh[2];
    std::vector<int8_t> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(n * k));
    for (int64_t i = 0; i < m * k; ++i) a[i] = (i * 7 + i / k) % 3 == 0 ? -127 : 127;
    for (int64_t i = 0; i < n * k; ++i) b[i] = (i * 5 + i / k) % 4 == 0 ? -127 : 127;
    for (int64_t i = 0; i < k; ++i) b[i] = 127;  // a row of pure maxima
    std::vector<int32_t> c(static_cast<size_t>(m * n));
    gemm_nt_s8(m, n, k, a.data(), b.data(), c.data());
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < n; ++j) {
        int64_t ref = 0;
        for (int64_t i = 0; i < k; ++i) ref += int64_t{a[r * k + i]} * b[j * k + i];
        if (ref != c[r * n + j]) return false;
      }
  }
  return true;
}

}  // namespace

bool int8_gemm_exact() {
  static const bool ok = []() {
    try {
      // The certified int8 search calls the GEMM both from the top level (multi-threaded) and
      // per tile inside a parallel region (single-threaded): probe both.
      if (!int8_probe()) return false;
      std::atomic<bool> all{true};
      at::parallel_for(0, std::max<int64_t>(1, at::get_num_threads()), 1,
                       [&](int64_t, int64_t) { all = all && int8_probe(); });
      return all.load();
    } catch (const std::exception&) {
      return false;
    }
  }();
  return ok;
}

}  // namespace cpu
}  // namespace rvqfast

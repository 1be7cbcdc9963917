// Thin torch binding for the rvqfast CUDA kernels (module rvqfast._cuda).
//
// Inputs arrive validated by rvqfast.ops (shapes, finiteness, index range); this file only checks
// what a kernel needs to stay memory-safe, converts to fp32 / int64 contiguous tensors, allocates
// outputs and scratch with torch's caching allocator, and calls the C launchers of
// kernels/cuda/*.cu on the current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <string>
#include <tuple>

#include "cuda/rvqfast_cuda.cuh"

namespace {

void check_cuda(const torch::Tensor& t, const char* name, int64_t dim) {
    TORCH_CHECK(t.is_cuda(), "rvqfast._cuda: ", name, " must be a CUDA tensor, got device ", t.device());
    TORCH_CHECK(t.dim() == dim, "rvqfast._cuda: ", name, " must have ", dim, " dims, got ", t.dim());
}

void check_rc(int rc, const char* what) {
    TORCH_CHECK(rc == 0, "rvqfast._cuda: ", what, " failed: ", cudaGetErrorString(static_cast<cudaError_t>(rc)),
                rc == static_cast<int>(cudaErrorNoKernelImageForDevice) ? " (needs compute capability >= 8.0)" : "");
}

int search_mode(const std::string& precision) {
    TORCH_CHECK(precision == "exact" || precision == "certified" || precision == "bf16",
                "rvqfast._cuda: precision must be 'exact', 'certified' or 'bf16', got '", precision, "'");
    // "exact": TF32 screen; "certified": BF16 screen with a rigorous per-code bound; both re-rank
    // exactly and rescan the rows they cannot certify. "bf16": BF16 screen, no rescan (approximate).
    if (precision == "exact") return RVQFAST_CUDA_TF32_CERTIFIED;
    return precision == "certified" ? RVQFAST_CUDA_BF16_CERTIFIED : RVQFAST_CUDA_BF16_APPROX;
}

torch::Tensor f32(const torch::Tensor& t) { return t.to(torch::kFloat32).contiguous(); }

torch::Tensor scratch(const torch::Tensor& like, size_t bytes) {
    return torch::empty({static_cast<int64_t>(bytes)}, like.options().dtype(torch::kUInt8));
}

std::tuple<torch::Tensor, torch::Tensor> nearest_code(const torch::Tensor& x, const torch::Tensor& codebook,
                                                      const std::string& precision) {
    check_cuda(x, "x", 2);
    check_cuda(codebook, "codebook", 2);
    TORCH_CHECK(x.size(1) == codebook.size(1), "rvqfast._cuda: x and codebook D differ");
    const c10::cuda::CUDAGuard guard(x.device());
    const auto xf = f32(x), cf = f32(codebook);
    const int64_t n = x.size(0), k = codebook.size(0), d = x.size(1);
    auto idx = torch::empty({n}, x.options().dtype(torch::kInt64));
    auto sq = torch::empty({n}, x.options().dtype(torch::kFloat32));
    auto ws = scratch(x, rvqfast_cuda_workspace_bytes(n, 1, k, d));
    check_rc(rvqfast_cuda_nearest_code(xf.data_ptr<float>(), cf.data_ptr<float>(), n, k, d, search_mode(precision),
                                       idx.data_ptr<int64_t>(), sq.data_ptr<float>(), ws.data_ptr(), nullptr,
                                       at::cuda::getCurrentCUDAStream()),
             "nearest_code");
    return {idx, sq};
}

// RVQ encode; `fallbacks`, when defined, is a 1-element int32 CUDA tensor that receives (adds) the
// number of row-stages the certified modes had to rescan exactly.
std::tuple<torch::Tensor, torch::Tensor> encode_impl(const torch::Tensor& x, const torch::Tensor& codebooks,
                                                     const std::string& precision, unsigned int* fallbacks) {
    check_cuda(x, "x", 2);
    check_cuda(codebooks, "codebooks", 3);
    TORCH_CHECK(x.size(1) == codebooks.size(2), "rvqfast._cuda: x and codebooks D differ");
    const c10::cuda::CUDAGuard guard(x.device());
    const auto xf = f32(x), cf = f32(codebooks);
    const int64_t n = x.size(0), q = codebooks.size(0), k = codebooks.size(1), d = x.size(1);
    auto idx = torch::empty({n, q}, x.options().dtype(torch::kInt64));
    auto quant = torch::empty({n, d}, x.options().dtype(torch::kFloat32));
    auto ws = scratch(x, rvqfast_cuda_workspace_bytes(n, q, k, d));
    check_rc(rvqfast_cuda_rvq_encode(xf.data_ptr<float>(), cf.data_ptr<float>(), n, q, k, d, search_mode(precision),
                                     idx.data_ptr<int64_t>(), quant.data_ptr<float>(), ws.data_ptr(), fallbacks,
                                     at::cuda::getCurrentCUDAStream()),
             "rvq_encode");
    return {idx, quant};
}

std::tuple<torch::Tensor, torch::Tensor> rvq_encode(const torch::Tensor& x, const torch::Tensor& codebooks,
                                                    const std::string& precision) {
    return encode_impl(x, codebooks, precision, nullptr);
}

// The same encode plus the count of row-stages that needed the exact rescan (for benchmarks).
std::tuple<torch::Tensor, torch::Tensor, int64_t> rvq_encode_fallbacks(const torch::Tensor& x,
                                                                       const torch::Tensor& codebooks,
                                                                       const std::string& precision) {
    check_cuda(x, "x", 2);
    auto counter = torch::zeros({1}, x.options().dtype(torch::kInt32));
    auto out = encode_impl(x, codebooks, precision, reinterpret_cast<unsigned int*>(counter.data_ptr<int32_t>()));
    return {std::get<0>(out), std::get<1>(out), counter.item<int64_t>()};
}

torch::Tensor rvq_decode(const torch::Tensor& indices, const torch::Tensor& codebooks) {
    check_cuda(indices, "indices", 2);
    check_cuda(codebooks, "codebooks", 3);
    TORCH_CHECK(indices.size(1) <= codebooks.size(0), "rvqfast._cuda: more index stages than codebooks");
    const c10::cuda::CUDAGuard guard(codebooks.device());
    const auto ix = indices.to(torch::kInt64).contiguous();
    const auto cf = f32(codebooks);
    const int64_t n = ix.size(0), q = ix.size(1), k = codebooks.size(1), d = codebooks.size(2);
    auto out = torch::empty({n, d}, codebooks.options().dtype(torch::kFloat32));
    check_rc(rvqfast_cuda_rvq_decode(ix.data_ptr<int64_t>(), cf.data_ptr<float>(), n, q, k, d, out.data_ptr<float>(),
                                     at::cuda::getCurrentCUDAStream()),
             "rvq_decode");
    return out;
}

std::tuple<torch::Tensor, torch::Tensor> ema_stats(const torch::Tensor& x, const torch::Tensor& indices,
                                                   int64_t num_codes) {
    check_cuda(x, "x", 2);
    check_cuda(indices, "indices", 1);
    TORCH_CHECK(indices.size(0) == x.size(0), "rvqfast._cuda: indices and x row counts differ");
    TORCH_CHECK(num_codes >= 1, "rvqfast._cuda: num_codes must be >= 1");
    const c10::cuda::CUDAGuard guard(x.device());
    const auto xf = f32(x);
    const auto ix = indices.to(torch::kInt64).contiguous();
    const int64_t n = x.size(0), d = x.size(1);
    auto counts = torch::empty({num_codes}, x.options().dtype(torch::kFloat32));
    auto sums = torch::empty({num_codes, d}, x.options().dtype(torch::kFloat32));
    check_rc(rvqfast_cuda_ema_stats(xf.data_ptr<float>(), ix.data_ptr<int64_t>(), n, d, num_codes,
                                    counts.data_ptr<float>(), sums.data_ptr<float>(),
                                    at::cuda::getCurrentCUDAStream()),
             "ema_stats");
    return {counts, sums};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "rvqfast CUDA kernels (TF32 / BF16 tensor-core screening + exact fp32 re-rank)";
    m.def("nearest_code", &nearest_code, "x (N,D), codebook (K,D), precision -> (indices int64, sqdist f32)");
    m.def("rvq_encode", &rvq_encode, "x (N,D), codebooks (Q,K,D), precision -> (indices (N,Q), quantized (N,D))");
    m.def("rvq_encode_fallbacks", &rvq_encode_fallbacks,
          "rvq_encode plus the number of row-stages rescanned exactly -> (indices, quantized, fallbacks)");
    m.def("rvq_decode", &rvq_decode, "indices (N,Q), codebooks (Q,K,D) -> (N,D) f32");
    m.def("ema_stats", &ema_stats, "x (N,D), indices (N,), num_codes -> (counts (K,), sums (K,D))");
    m.attr("CANDIDATES") = RVQFAST_CUDA_CANDIDATES;
}

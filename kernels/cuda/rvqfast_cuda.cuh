// C launchers for the rvqfast CUDA kernels: raw device pointers + a stream, no torch headers.
//
// All float buffers are fp32, row-major and contiguous; indices are int64. Every launcher is
// asynchronous on `stream` and returns the cudaError_t of its launches as an int (0 = success).
// The torch binding (kernels/binding/cuda_binding.cpp) and the standalone harness
// (kernels/cuda/test/check_kernels.cu) are the two callers.
#pragma once

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

// Candidates kept per row by the tensor-core screening pass before the exact fp32 re-rank.
#define RVQFAST_CUDA_CANDIDATES 8

// Search modes (the `mode` argument of the search launchers).
// TF32 screen (WMMA m16n16k8), exact fp32 re-rank, exact scan of rows the TF32 bound cannot certify.
#define RVQFAST_CUDA_TF32_CERTIFIED 1
// BF16 screen (WMMA m16n16k16), candidates ranked by a rigorous per-code lower bound of the
// distance (docs/gpu.md), exact fp32 re-rank, exact scan of rows it cannot certify.
#define RVQFAST_CUDA_BF16_CERTIFIED 2
// BF16 screen, exact fp32 re-rank of its best candidates, no fallback scan (approximate).
#define RVQFAST_CUDA_BF16_APPROX 0
// Largest D the BF16 bound is evaluated for; certified searches above it use the TF32 screen.
#define RVQFAST_CUDA_BF16_MAX_D 16384

#ifdef __cplusplus
extern "C" {
#endif

// Bytes of scratch `workspace` that nearest_code (Q = 1) / rvq_encode need for these sizes.
size_t rvqfast_cuda_workspace_bytes(int64_t n, int64_t q, int64_t k, int64_t d);

// Nearest code of each row of x (n, d) in codebook (k, d): out_idx (n,), out_sqdist (n,) = ‖x − c‖².
// mode: one of RVQFAST_CUDA_*. The certified modes return the exact fp32 nearest code up to
// near-ties (tensor-core screening, exact fp32 re-rank of the best candidates, and an exact full
// scan for any row whose winner the screen's error bound cannot certify).
// fallbacks (optional, device pointer, may be NULL) is incremented once per fallback row.
int rvqfast_cuda_nearest_code(const float* x, const float* codebook, int64_t n, int64_t k, int64_t d,
                              int mode, int64_t* out_idx, float* out_sqdist, void* workspace,
                              unsigned int* fallbacks, cudaStream_t stream);

// Residual quantization through q stages of codebooks (q, k, d): out_idx (n, q), out_quant (n, d)
// = sum of the chosen codes (accumulated in stage order, like the reference backend). The
// residual lives in out_quant during the stages; the sum is written by a final decode.
int rvqfast_cuda_rvq_encode(const float* x, const float* codebooks, int64_t n, int64_t q, int64_t k,
                            int64_t d, int mode, int64_t* out_idx, float* out_quant, void* workspace,
                            unsigned int* fallbacks, cudaStream_t stream);

// out (n, d) = sum over stages s of codebooks[s, idx[n, s]]; idx == -1 contributes nothing.
int rvqfast_cuda_rvq_decode(const int64_t* idx, const float* codebooks, int64_t n, int64_t q, int64_t k,
                            int64_t d, float* out, cudaStream_t stream);

// counts (k,) and sums (k, d) of the rows of x (n, d) per code idx (n,); idx == -1 rows ignored.
// Zeroes counts and sums first. fp32 atomics: sums are order-dependent in the last bits.
int rvqfast_cuda_ema_stats(const float* x, const int64_t* idx, int64_t n, int64_t d, int64_t k,
                           float* counts, float* sums, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

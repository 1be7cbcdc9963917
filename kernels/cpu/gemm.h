// Matrix-product tiles for the search kernels: C (m x n) = A (m x k) * B (n x k)^T, row-major.
//
// Implemented on borrowed buffers with ATen's oneDNN matmul (fp32 and bf16; AVX512-BF16 / AMX
// where the CPU has them), falling back to at::mm (MKL). Called outside parallel regions so the
// GEMM itself uses all threads; buffers are bounded row blocks, never N x K.
#pragma once

#include <cstdint>

namespace rvqfast {
namespace cpu {

// Route GEMMs through ATen's oneDNN matmul (true, default) or at::mm (false); returns whether
// oneDNN is now used. Test / benchmark hook; not thread-safe: call it while no kernel runs.
bool set_gemm_onednn(bool allow);

void gemm_nt_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c);

// Inputs and output are bfloat16 bit patterns; products accumulate in fp32 and the result is
// rounded to bf16 (round-to-nearest-even), which the certified error bound accounts for.
void gemm_nt_bf16(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b,
                  uint16_t* c);

}  // namespace cpu
}  // namespace rvqfast

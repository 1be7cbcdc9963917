// Matrix-product tiles for the search kernels: C (m x n) = A (m x k) * B (n x k)^T, row-major.
//
// Implemented with ATen's mm on borrowed buffers, which lands in MKL (fp32) and oneDNN (bf16,
// using AVX512-BF16 / AMX where the CPU has them). Called from inside at::parallel_for, so each
// call runs on the calling thread only; buffers are per-thread tiles, never N x K.
#pragma once

#include <cstdint>

namespace rvqfast {
namespace cpu {

void gemm_nt_f32(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c);

// Inputs and output are bfloat16 bit patterns; products accumulate in fp32 and the result is
// rounded to bf16 (round-to-nearest-even), which the certified error bound accounts for.
void gemm_nt_bf16(int64_t m, int64_t n, int64_t k, const uint16_t* a, const uint16_t* b,
                  uint16_t* c);

}  // namespace cpu
}  // namespace rvqfast

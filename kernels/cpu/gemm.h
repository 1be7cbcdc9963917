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

// Signed int8 inputs, exact int32 output (s8s8 -> s32 through ATen's _int_mm: oneDNN with
// AVX512-VNNI / AVX-VNNI / AMX-INT8 where the CPU has them, a plain loop otherwise). k must be a
// multiple of 4 (the caller pads with zeros: _int_mm returns garbage for k == 1 on torch 2.13),
// and k * 255 * 127 < 2^31 so no int32 accumulation, compensation included, can wrap.
void gemm_nt_s8(int64_t m, int64_t n, int64_t k, const int8_t* a, const int8_t* b, int32_t* c);

// Whether the int8 GEMM is available and returned exact int32 sums on a probe built to expose
// intermediate saturation (all +-127 inputs, several shapes). Computed once; the certified int8
// screen is only offered when this holds (its error bound assumes exact integer products).
bool int8_gemm_exact();

}  // namespace cpu
}  // namespace rvqfast

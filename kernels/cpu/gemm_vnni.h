// Int8 GEMM of the certified int8 screen against a codebook packed once (AVX512-VNNI, no AMX).
// C (m x K, row stride ldc >= vnni_padded_codes(K)) = A (m x dp, s8) * B (K x dp, s8)^T, exact
// int32. The kernel writes whole 12-row x 32-code micro-tiles: C needs vnni_padded_rows(m) rows
// and vnni_padded_codes(K) columns; the padding holds garbage.
#pragma once

#include <cstdint>
#include <vector>

namespace rvqfast {
namespace cpu {

// The CPU has AVX512-VNNI and no AMX-INT8 (with AMX, oneDNN's int8 GEMM is the faster one).
bool int8_gemm_vnni_supported();
// Use this kernel where supported (default; RVQFAST_INT8_GEMM=onednn turns it off) or oneDNN;
// returns whether it is now used. Test / benchmark hook: call it while no kernel runs.
bool set_int8_gemm_vnni(bool allow);
bool int8_gemm_vnni_enabled();

int64_t vnni_padded_codes(int64_t K);
int64_t vnni_padded_rows(int64_t m);

// Packs the K x dp int8 codes (dp a multiple of 4) and their compensation 128 * sum_i b_i.
void pack_codes_vnni(const int8_t* b, int64_t K, int64_t dp, std::vector<int8_t>& packed,
                     std::vector<int32_t>& bsum);

// Single-threaded; a: m x dp rows (s8, row stride dp).
void gemm_s8_vnni(const int8_t* a, int64_t m, int64_t dp, const int8_t* packed,
                  const int32_t* bsum, int64_t K, int32_t* c, int64_t ldc);

}  // namespace cpu
}  // namespace rvqfast

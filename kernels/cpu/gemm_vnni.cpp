// Hand-written int8 GEMM for the certified int8 screen on AVX512-VNNI CPUs without AMX.
//
// Why not oneDNN (ATen's _int_mm): measured on AMD EPYC Zen 4 (1 thread, the tiled search's
// 128 x 512 x 512 tiles), _int_mm reaches 382 GOP/s (406 on one whole-matrix call) and this
// kernel 452 GOP/s on 120-row tiles, about the CPU's vpdpbusd peak at its clock. _int_mm takes
// plain tensors, so whatever layout oneDNN wants is produced inside each of the 588 calls of an
// N = 12544, Q = 6 encode; here the codebook (the B operand) is packed once, when it is prepared.
// Why inline assembly: GCC 12 keeps an array of 24 __m512i accumulators partly on the stack and
// adds a register copy around every vpdpbusd (measured 220 GOP/s with intrinsics).
//
// vpdpbusd multiplies unsigned by signed bytes, so the signed rows a are fed as a + 128 (a XOR
// 0x80) and 128 * sum_i b_i is subtracted per code. Every product and every int32 sum is exact
// as long as dp * 255 * 127 < 2^31 (kMaxInt8Dim keeps dp far below that).
#include "cpu/gemm_vnni.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

namespace rvqfast {
namespace cpu {
namespace {

constexpr int64_t kMR = 12;  // rows per micro-tile
constexpr int64_t kNR = 32;  // codes per micro-tile (two 16-lane vectors)

bool cpu_has_vnni_without_amx() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni") &&
         !__builtin_cpu_supports("amx-int8");
#else
  return false;
#endif
}

bool g_enabled = [] {
  // Benchmarking override: RVQFAST_INT8_GEMM=onednn keeps ATen's _int_mm.
  const char* e = std::getenv("RVQFAST_INT8_GEMM");
  return cpu_has_vnni_without_amx() && !(e && std::string(e) == "onednn");
}();

#if defined(__x86_64__) && defined(__GNUC__)
// One output row of the micro-tile, in two accumulators z0 (codes 0-15) and z1 (16-31):
// zeroed; a k-step (broadcast 4 bytes of the row at byte `off`, two vpdpbusd with the code
// vectors in zmm24 / zmm25); stored minus the compensation (in zmm24 / zmm25) to the next C row.
#define RVQ_ZERO(z0, z1) "vpxord %%zmm" #z0 ", %%zmm" #z0 ", %%zmm" #z0 "\n\t" \
                         "vpxord %%zmm" #z1 ", %%zmm" #z1 ", %%zmm" #z1 "\n\t"
#define RVQ_STEP(off, za, z0, z1) "vpbroadcastd " #off "(%[a]), %%zmm" #za "\n\t" \
                                  "vpdpbusd %%zmm24, %%zmm" #za ", %%zmm" #z0 "\n\t" \
                                  "vpdpbusd %%zmm25, %%zmm" #za ", %%zmm" #z1 "\n\t"
#define RVQ_STORE(z0, z1) "vpsubd %%zmm24, %%zmm" #z0 ", %%zmm" #z0 "\n\t" \
                          "vpsubd %%zmm25, %%zmm" #z1 ", %%zmm" #z1 "\n\t" \
                          "vmovdqu64 %%zmm" #z0 ", (%[c])\n\t" \
                          "vmovdqu64 %%zmm" #z1 ", 64(%[c])\n\t" \
                          "add %[ldc], %[c]\n\t"

// C (kMR x kNR, row stride ldc_bytes) = A B^T - bsum for one micro-tile. a: packed rows
// [dp/4][kMR][4] (u8); b: packed codes [dp/4][16][4] for codes 0-15, the next 16 codes bs bytes
// further; n4 = dp / 4 >= 1 steps.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void micro_tile(
    const uint8_t* a, const int8_t* b, int64_t bs, int64_t n4, const int32_t* bsum, int32_t* c,
    int64_t ldc_bytes) {
  asm volatile(
      RVQ_ZERO(0, 1) RVQ_ZERO(2, 3) RVQ_ZERO(4, 5) RVQ_ZERO(6, 7)
      RVQ_ZERO(8, 9) RVQ_ZERO(10, 11) RVQ_ZERO(12, 13) RVQ_ZERO(14, 15)
      RVQ_ZERO(16, 17) RVQ_ZERO(18, 19) RVQ_ZERO(20, 21) RVQ_ZERO(22, 23)
      "1:\n\t"
      "vmovdqu64 (%[b]), %%zmm24\n\t"
      "vmovdqu64 (%[b],%[bs]), %%zmm25\n\t"
      RVQ_STEP(0, 26, 0, 1) RVQ_STEP(4, 27, 2, 3) RVQ_STEP(8, 26, 4, 5)
      RVQ_STEP(12, 27, 6, 7) RVQ_STEP(16, 26, 8, 9) RVQ_STEP(20, 27, 10, 11)
      RVQ_STEP(24, 26, 12, 13) RVQ_STEP(28, 27, 14, 15) RVQ_STEP(32, 26, 16, 17)
      RVQ_STEP(36, 27, 18, 19) RVQ_STEP(40, 26, 20, 21) RVQ_STEP(44, 27, 22, 23)
      "add $48, %[a]\n\t"
      "add $64, %[b]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "vmovdqu64 (%[bsum]), %%zmm24\n\t"
      "vmovdqu64 64(%[bsum]), %%zmm25\n\t"
      RVQ_STORE(0, 1) RVQ_STORE(2, 3) RVQ_STORE(4, 5) RVQ_STORE(6, 7)
      RVQ_STORE(8, 9) RVQ_STORE(10, 11) RVQ_STORE(12, 13) RVQ_STORE(14, 15)
      RVQ_STORE(16, 17) RVQ_STORE(18, 19) RVQ_STORE(20, 21) RVQ_STORE(22, 23)
      : [a] "+r"(a), [b] "+r"(b), [n] "+r"(n4), [c] "+r"(c)
      : [bs] "r"(bs), [bsum] "r"(bsum), [ldc] "r"(ldc_bytes)
      : "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9", "zmm10",
        "zmm11", "zmm12", "zmm13", "zmm14", "zmm15", "zmm16", "zmm17", "zmm18", "zmm19", "zmm20",
        "zmm21", "zmm22", "zmm23", "zmm24", "zmm25", "zmm26", "zmm27", "memory", "cc");
}
#undef RVQ_ZERO
#undef RVQ_STEP
#undef RVQ_STORE
#endif

}  // namespace

bool int8_gemm_vnni_supported() { return cpu_has_vnni_without_amx(); }

bool set_int8_gemm_vnni(bool allow) {
  g_enabled = allow && cpu_has_vnni_without_amx();
  return g_enabled;
}

bool int8_gemm_vnni_enabled() { return g_enabled; }

int64_t vnni_padded_codes(int64_t K) { return (K + kNR - 1) / kNR * kNR; }

int64_t vnni_padded_rows(int64_t m) { return (m + kMR - 1) / kMR * kMR; }

void pack_codes_vnni(const int8_t* b, int64_t K, int64_t dp, std::vector<int8_t>& packed,
                     std::vector<int32_t>& bsum) {
  const int64_t Kp = vnni_padded_codes(K), n4 = dp / 4;
  packed.assign(static_cast<size_t>(Kp * dp), 0);
  bsum.assign(static_cast<size_t>(Kp), 0);
  for (int64_t k = 0; k < K; ++k) {
    int8_t* blk = packed.data() + (k / 16) * n4 * 64 + (k % 16) * 4;
    const int8_t* row = b + k * dp;
    int32_t s = 0;
    for (int64_t i4 = 0; i4 < n4; ++i4) {
      std::memcpy(blk + i4 * 64, row + i4 * 4, 4);
      s += int32_t{row[4 * i4]} + row[4 * i4 + 1] + row[4 * i4 + 2] + row[4 * i4 + 3];
    }
    bsum[k] = 128 * s;
  }
}

void gemm_s8_vnni(const int8_t* a, int64_t m, int64_t dp, const int8_t* packed,
                  const int32_t* bsum, int64_t K, int32_t* c, int64_t ldc) {
#if defined(__x86_64__) && defined(__GNUC__)
  const int64_t Kp = vnni_padded_codes(K), n4 = dp / 4, mp = vnni_padded_rows(m);
  // All rows packed first ([row block][dp/4][kMR][4], ~dp bytes per row), then code panels
  // outermost: a panel (kNR x dp bytes) stays in L1 while every row block streams past it, so
  // the codebook is read once per call (it is evicted between the stages of the tiled search).
  thread_local std::vector<uint8_t> pa;
  pa.resize(static_cast<size_t>(mp * dp));
  for (int64_t r0 = 0; r0 < mp; r0 += kMR) {
    uint8_t* blk = pa.data() + r0 * dp;
    for (int64_t r = 0; r < kMR; ++r) {
      const int8_t* row = r0 + r < m ? a + (r0 + r) * dp : nullptr;
      for (int64_t i4 = 0; i4 < n4; ++i4) {
        uint32_t w = 0x80808080u;  // rows past m: zeros (their outputs land in the padding)
        if (row) {
          std::memcpy(&w, row + i4 * 4, 4);
          w ^= 0x80808080u;
        }
        std::memcpy(blk + (i4 * kMR + r) * 4, &w, 4);
      }
    }
  }
  const int64_t ldc_bytes = ldc * static_cast<int64_t>(sizeof(int32_t));
  for (int64_t k0 = 0; k0 < Kp; k0 += kNR) {
    const int8_t* panel = packed + (k0 / 16) * n4 * 64;
    for (int64_t r0 = 0; r0 < mp; r0 += kMR)
      micro_tile(pa.data() + r0 * dp, panel, n4 * 64, n4, bsum + k0, c + r0 * ldc + k0, ldc_bytes);
  }
#else
  (void)a, (void)m, (void)dp, (void)packed, (void)bsum, (void)K, (void)c, (void)ldc;
#endif
}

}  // namespace cpu
}  // namespace rvqfast

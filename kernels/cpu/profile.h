// Optional per-phase cycle counters for the search kernels (set RVQFAST_PROFILE=1 in the
// environment: the totals are printed to stderr at exit). Off by default; when off each probe
// is one predictable branch. Used to find where certified search spends its time
// (docs/certified.md, "Where the time goes").
#pragma once

#include <cstdint>

namespace rvqfast {
namespace cpu {

enum class Phase : int {
  kPrep,      // stage-0 centring / quantization of a block
  kGemm,      // the block's GEMM (wall cycles of the calling thread)
  kEpilogue,  // the whole parallel epilogue of a block (wall cycles of the calling thread)
  kScreen,    // bound computation + candidate selection (summed over threads)
  kNarrow,    // narrowing + re-rank (summed over threads)
  kFinish,    // residual step / output sum (summed over threads)
  kSerial,    // statistics and overflow handling after the epilogue
  kCount
};

bool profile_on();
uint64_t profile_now();
void profile_add(Phase ph, uint64_t cycles);

// Adds the cycles between construction and destruction to `ph` when profiling is on.
struct ProfileScope {
  Phase ph;
  uint64_t t0;
  explicit ProfileScope(Phase p) : ph(p), t0(profile_on() ? profile_now() : 0) {}
  ~ProfileScope() {
    if (t0) profile_add(ph, profile_now() - t0);
  }
};

}  // namespace cpu
}  // namespace rvqfast

// Grouped searches: G independent quantizers (groups), each with its own codebooks, in one call.
//
// Layout: groups lead. x is G x N x D (group g's rows are one contiguous block), indices are
// G x N (nearest code) or G x N x Q (encode), quantized / sqdist follow x. Each group runs the
// single-codebook kernels of search.h on its block in place (no copies, one GIL release and one
// codebook-cache lookup per group in the binding).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/search.h"

namespace rvqfast {
namespace cpu {

// cbs[g]: group g's prepared codebook (all D-wide, same D).
void grouped_nearest_code(const float* x, int64_t G, int64_t N,
                          const std::vector<const PreparedCodebook*>& cbs, Precision p,
                          int64_t* indices, float* sqdist);

// stages[g]: group g's prepared codebooks, one per stage (every group has the same Q).
void grouped_rvq_encode(const float* x, int64_t G, int64_t N,
                        const std::vector<const std::vector<PreparedCodebook>*>& stages,
                        Precision p, int64_t* indices, float* quantized);

}  // namespace cpu
}  // namespace rvqfast

// Grouped searches over the groups-leading layout (see grouped.h).
//
// Groups run one after another, each through the multi-threaded single-group kernels: every
// group's GEMMs are as large as an rvq_encode call of N rows, which keeps the threads busy, and
// a group's residual block stays in the per-thread workspace across its stages.
#include "cpu/grouped.h"

#include <cstddef>

namespace rvqfast {
namespace cpu {

void grouped_nearest_code(const float* x, int64_t G, int64_t N,
                          const std::vector<const PreparedCodebook*>& cbs, Precision p,
                          int64_t* indices, float* sqdist) {
  for (int64_t g = 0; g < G; ++g) {
    const PreparedCodebook& cb = *cbs[static_cast<std::size_t>(g)];
    nearest_code(x + g * N * cb.D, N, cb, p, indices + g * N, sqdist ? sqdist + g * N : nullptr);
  }
}

void grouped_rvq_encode(const float* x, int64_t G, int64_t N,
                        const std::vector<const std::vector<PreparedCodebook>*>& stages,
                        Precision p, int64_t* indices, float* quantized) {
  for (int64_t g = 0; g < G; ++g) {
    const std::vector<PreparedCodebook>& cbs = *stages[static_cast<std::size_t>(g)];
    const int64_t Q = static_cast<int64_t>(cbs.size()), D = cbs[0].D;
    rvq_encode(x + g * N * D, N, cbs, p, indices + g * N * Q, quantized + g * N * D);
  }
}

}  // namespace cpu
}  // namespace rvqfast

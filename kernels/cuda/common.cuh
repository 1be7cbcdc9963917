// Device helpers shared by the rvqfast kernels.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace rvqfast {

// Butterfly sum: every lane ends with the same value, summed in the same fixed order, so exact
// ties between identical codes stay exact ties.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// ‖a − b‖² over d elements, lanes striding over d; the result is uniform across the warp.
__device__ __forceinline__ float warp_sqdist(const float* a, const float* b, int64_t d, int lane) {
    float s = 0.f;
    for (int64_t i = lane; i < d; i += 32) {
        const float t = a[i] - b[i];
        s = fmaf(t, t, s);
    }
    return warp_sum(s);
}

inline unsigned int blocks_for(int64_t work, int per_block) {
    return static_cast<unsigned int>((work + per_block - 1) / per_block);
}

}  // namespace rvqfast

#pragma once
// The block program of the CUDA edge_targets kernel (common/exec.h): one thread per output pixel,
// grid-stride over the (N, H, W) pixels with 64-bit indices. No shared memory, no barrier.

#include "edge_targets_math.h"
#include "exec.h"

namespace gscnn {
namespace et {

template <typename Block>  // an EdgeTargetsBlock
struct EdgeTargetsProgram {
  static constexpr int kMaxThreads = 256;
  Block block;

  template <typename Exec>
  GSCNN_HD void operator()(Exec& ex) const {
    const int64_t P = block.pixels(), T = ex.threads();
    const int64_t first = ex.block() * T, step = ex.grid() * T;
    ex.for_each_thread([&](int64_t t) {
      for (int64_t p = first + t; p < P; p += step) block.pixel(p);
    });
  }
};

}  // namespace et
}  // namespace gscnn

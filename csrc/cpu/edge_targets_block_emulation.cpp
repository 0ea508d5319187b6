// CPU emulation of the CUDA edge_targets kernel, for tests on machines without a GPU: the kernel's
// own body (et::EdgeTargetsBlock::pixel, common/edge_targets.h) run with the kernel's grid-stride
// loop, block by block and thread by thread, for a launch shape given by the caller. Not a fast
// path.

#include <torch/library.h>

#include "../common/edge_targets_host.h"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops._edge_targets_emulate_cuda";

at::Tensor edge_targets_emulate(const at::Tensor& target, double radius, int64_t ignore_index,
                                int64_t threads, int64_t blocks) {
  TORCH_CHECK(threads >= 1 && threads <= 1024, kOp,
              ": argument 'threads' must be in [1, 1024], got ", threads);
  TORCH_CHECK(blocks >= 1, kOp, ": argument 'blocks' must be positive, got ", blocks);
  return run_edge_targets(kOp, target, radius, ignore_index, [&](const auto& block) {
    const int64_t T = threads, P = block.pixels();
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t p = blk * T + t; p < P; p += blocks * T) block.pixel(p);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CPU, m) {
  m.impl("_edge_targets_emulate_cuda", &edge_targets_emulate);
}

}  // namespace gscnn

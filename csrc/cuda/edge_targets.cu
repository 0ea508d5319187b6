// CUDA edge_targets: the block program of common/edge_targets_program.h (one thread per output
// pixel, grid-stride with 64-bit indices), launched by cuda/launch.cuh. A thread walks the disk
// around its pixel and stops at the first neighbour with a different valid label; neighbouring
// threads read neighbouring columns, so each disk row is a coalesced read, and the ~13 reads per
// pixel at radius 2 hit L1/L2.

#include <torch/library.h>

#include "../common/edge_targets_launch.h"
#include "launch.cuh"

namespace gscnn {
namespace {

constexpr const char* kOp = "gscnn_ops.edge_targets";

at::Tensor edge_targets_cuda(const at::Tensor& target, double radius, int64_t ignore_index) {
  // The only tensor argument: a CUDA tensor is guaranteed by the dispatcher.
  const auto guard = cuda::guard_device_of(target);
  cuda::Device device;
  return run_edge_targets(kOp, target, radius, ignore_index,
                          program_edge_targets_kernel(kOp, device, target));
}

}  // namespace

TORCH_LIBRARY_IMPL(gscnn_ops, CUDA, m) { m.impl("edge_targets", &edge_targets_cuda); }

}  // namespace gscnn
